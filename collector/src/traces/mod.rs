//! Traces in the collector: the assembler that groups spans by trace id and
//! writes whole traces to the span store, and the service graph computed
//! from them.

mod assembler;
mod graph;
mod tempo_metrics;

pub use assembler::{Assembler, AssemblerOptions, AssemblerStats};
