//! Where the engine reads series from: label matchers, the [`SeriesSource`]
//! trait the metric store implements, and [`MemorySource`] for tests and
//! small in-memory data.

use periscope_proto::{Labels, SampleValue, label};

use super::QueryError;

/// How a [`Matcher`] compares a label value.
#[derive(Clone, Debug)]
pub enum MatchOp {
    Equal,
    NotEqual,
    /// The regex is fully anchored: `^(?:...)$`, as PromQL requires.
    Re(regex::Regex),
    /// The regex is fully anchored: `^(?:...)$`, as PromQL requires.
    NotRe(regex::Regex),
}

/// One label matcher of a selector, e.g. `job=~"api|web"`.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    /// Whether a label value satisfies the matcher; an absent label is `""`.
    pub fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchOp::Equal => self.value == v,
            MatchOp::NotEqual => self.value != v,
            MatchOp::Re(re) => re.is_match(v),
            MatchOp::NotRe(re) => !re.is_match(v),
        }
    }

    /// Whether a series' labels satisfy the matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(label(labels, &self.name).unwrap_or(""))
    }
}

/// A series and some of its samples (Unix milliseconds, sorted by time).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, SampleValue)>,
}

/// Receives the series of [`SeriesSource::scan_floats`]: part, labels,
/// samples `(ms, value)` sorted by time.
pub type FloatVisitor<'a> = dyn Fn(usize, &Labels, &[(i64, f64)]) -> Result<(), String> + Sync + 'a;

/// A store of series the engine can query.
pub trait SeriesSource: Send + Sync {
    /// Series matching every matcher that have a sample in [start_ms, end_ms] (inclusive); only those samples, sorted.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, QueryError>;

    /// Hands each series [`SeriesSource::select`] would return to `visit`,
    /// with its samples as floats (staleness markers included), from up to
    /// `parts` threads: `visit` gets the part (below `parts`) and sees one
    /// part's series one at a time. A source that can read series one by
    /// one keeps only those in memory. `Ok(false)` when some sample is a
    /// histogram: what was visited is then incomplete. An error from
    /// `visit` stops the scan and is returned.
    fn scan_floats(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        _parts: usize,
        visit: &FloatVisitor<'_>,
    ) -> Result<bool, String> {
        let series = self
            .select(matchers, start_ms, end_ms)
            .map_err(|e| e.message)?;
        let mut floats = Vec::with_capacity(series.len());
        for s in &series {
            let mut pts = Vec::with_capacity(s.samples.len());
            for (t, v) in &s.samples {
                match v {
                    SampleValue::Float(f) => pts.push((*t, *f)),
                    SampleValue::Histogram(_) => return Ok(false),
                }
            }
            floats.push(pts);
        }
        for (s, pts) in series.iter().zip(&floats) {
            visit(0, &s.labels, pts)?;
        }
        Ok(true)
    }

    /// Names the data a source serves (a store and tenant) for caching
    /// results across queries; `None` (the default) turns caching off.
    fn cache_id(&self) -> Option<String> {
        None
    }

    /// A number that changes whenever samples in `[start_ms, end_ms]` may
    /// have changed; only read when [`SeriesSource::cache_id`] is `Some`.
    fn generation(&self, _start_ms: i64, _end_ms: i64) -> u64 {
        0
    }
}

/// Series held in memory, for tests and small data sets.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    pub series: Vec<Series>,
}

impl SeriesSource for MemorySource {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let mut out = Vec::new();
        for s in &self.series {
            if !matchers.iter().all(|m| m.matches_labels(&s.labels)) {
                continue;
            }
            let samples: Vec<_> = s
                .samples
                .iter()
                .filter(|(t, _)| (start_ms..=end_ms).contains(t))
                .cloned()
                .collect();
            if !samples.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    samples,
                });
            }
        }
        Ok(out)
    }
}
