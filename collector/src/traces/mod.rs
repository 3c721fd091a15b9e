//! Traces in the collector: the assembler that groups spans by trace id and
//! writes whole traces to the span store, and the service graph computed
//! from them.

mod assembler;
mod graph;

pub use assembler::{Assembler, AssemblerOptions, AssemblerStats};
