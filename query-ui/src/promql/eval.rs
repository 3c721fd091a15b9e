//! Query planning (which samples to load) and step-wise evaluation of the
//! syntax tree.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use periscope_proto::{Labels, NAME_LABEL, SampleValue, is_stale_nan};
use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use super::source::{MatchOp, Matcher, Series, SeriesSource};
use super::value::QueryValue;
use super::{EngineOptions, QueryError};

use crate::sync::MutexRecover;

/// Prometheus' limit on the points of one series in a range query; also
/// the most steps one subquery evaluation may take.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Stack of the threads evaluating a range query's chunks: evaluation
/// recurses once per level of the (depth-limited) syntax tree.
const EVAL_STACK_BYTES: usize = 32 << 20;

/// Step of a subquery without an explicit one (Prometheus' default
/// evaluation interval).
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// One element of an instant vector.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub labels: Labels,
    pub v: SampleValue,
}

impl Sample {
    pub fn float(labels: Labels, f: f64) -> Self {
        Sample {
            labels,
            v: SampleValue::Float(f),
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self.v {
            SampleValue::Float(f) => Some(f),
            SampleValue::Histogram(_) => None,
        }
    }
}

/// The value of an expression at one evaluation time.
pub(crate) enum Value {
    Scalar(f64),
    Str(String),
    Vector(Vec<Sample>),
    /// Series with the samples of their range window.
    Matrix(Vec<Series>),
}

/// Evaluates the expression at a single time.
pub fn instant_query(
    src: &dyn SeriesSource,
    query: &str,
    time_ms: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, QueryError> {
    let expr = parse(query, opts)?;
    let deadline = deadline_of(opts);
    let ev = Evaluator::load(
        src,
        &expr,
        (time_ms, time_ms),
        (time_ms, time_ms),
        deadline,
        opts,
    )?;
    Ok(match ev.eval(&expr, time_ms)? {
        Value::Scalar(f) => QueryValue::Scalar(time_ms, f),
        Value::Str(s) => QueryValue::String(time_ms, s),
        Value::Vector(v) => {
            check_unique(&v)?;
            QueryValue::Vector(v.into_iter().map(|s| (s.labels, time_ms, s.v)).collect())
        }
        Value::Matrix(m) => {
            QueryValue::Matrix(m.into_iter().map(|s| (s.labels, s.samples)).collect())
        }
    })
}

/// Evaluates the expression at `start, start + step, ... <= end`.
pub fn range_query(
    src: &dyn SeriesSource,
    query: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    opts: &EngineOptions,
) -> Result<QueryValue, QueryError> {
    if step_ms <= 0 {
        return Err(QueryError::bad_data(
            "zero or negative query resolution step widths are not accepted",
        ));
    }
    if end_ms < start_ms {
        return Err(QueryError::bad_data(
            "end timestamp must not be before start time",
        ));
    }
    // Checked: a range of the whole i64 overflows.
    let points = end_ms
        .checked_sub(start_ms)
        .map(|span| span / step_ms)
        .and_then(|n| n.checked_add(1));
    if points.is_none_or(|n| n > MAX_POINTS_PER_SERIES) {
        return Err(QueryError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries, try decreasing the query resolution",
        ));
    }
    let expr = parse(query, opts)?;
    match expr.value_type() {
        parser::value::ValueType::Scalar | parser::value::ValueType::Vector => {}
        other => {
            return Err(QueryError::bad_data(format!(
                "invalid expression type \"{other}\" for range query, must be scalar or instant vector"
            )));
        }
    }
    let deadline = deadline_of(opts);
    // Evaluated in chunks of steps, each loading only the samples its steps
    // read: memory and the sample limit scale with a chunk, not the range.
    // Chunks are independent and run on a few threads; their results are
    // merged in time order.
    //
    // In i128: with a step near i64::MAX the chunk bounds overflow i64 (a
    // wrapped bound once looped forever).
    let (step, end) = (i128::from(step_ms), i128::from(end_ms));
    let chunk = (i128::from(opts.range_chunk_ms) / step).max(1) * step;
    // With the start on the step grid, chunks end on multiples of the chunk
    // length, so that a later query over a shifted window (a dashboard's
    // refresh) meets the same chunks and finds them in the results cache.
    let aligned = start_ms.rem_euclid(step_ms) == 0;
    let mut chunks = Vec::new();
    let mut from = i128::from(start_ms);
    while from <= end {
        let to = if aligned {
            ((from.div_euclid(chunk) + 1) * chunk - step).min(end)
        } else {
            (from + chunk - step).min(end)
        };
        // Both within [start_ms, end_ms]: they fit an i64.
        chunks.push((from as i64, to as i64));
        from = to + step;
    }
    let cache_key = src.cache_id().map(|id| {
        // `@ start()` and `@ end()` make a chunk depend on the whole range.
        let range = if query.contains("start()") || query.contains("end()") {
            format!("{start_ms}/{end_ms}")
        } else {
            String::new()
        };
        format!(
            "{id}\u{0}{query}\u{0}{step_ms}\u{0}{}\u{0}{range}",
            opts.lookback_ms
        )
    });
    if opts.series_at_a_time
        && super::range::streams(&expr)
        && let Some(r) = stream_chunks(
            src,
            &expr,
            cache_key.as_deref(),
            &chunks,
            (start_ms, end_ms),
            step_ms,
            deadline,
            opts,
        )
    {
        return assemble(r?.into_iter().map(Ok), opts);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, opts.range_threads.max(1))
        .min(chunks.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let mut results: Vec<Option<Result<Vec<MatrixSeries>, QueryError>>> =
        (0..chunks.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let work = || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= chunks.len() || failed.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let r = cached_chunk(
                            cache_key.as_deref(),
                            chunks[i],
                            src,
                            &expr,
                            (start_ms, end_ms),
                            opts,
                            || {
                                eval_chunk(
                                    src,
                                    &expr,
                                    (start_ms, end_ms),
                                    chunks[i],
                                    step_ms,
                                    deadline,
                                    opts,
                                )
                            },
                        );
                        if r.is_err() {
                            failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        done.push((i, r));
                    }
                    done
                };
                std::thread::Builder::new()
                    .name("periscope-promql".into())
                    .stack_size(EVAL_STACK_BYTES)
                    .spawn_scoped(scope, work)
            })
            .collect();
        for w in workers {
            let done = match w {
                // A panic in one chunk fails the query instead of leaving
                // its chunks out of the answer.
                Ok(w) => w.join().unwrap_or_else(|_| {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    vec![(
                        usize::MAX,
                        Err(QueryError::new(
                            crate::error::ErrorKind::Internal,
                            "query evaluation panicked",
                        )),
                    )]
                }),
                Err(e) => {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    vec![(
                        usize::MAX,
                        Err(QueryError::new(
                            crate::error::ErrorKind::Internal,
                            format!("failed to start a query thread: {e}"),
                        )),
                    )]
                }
            };
            for (i, r) in done {
                match results.get_mut(i) {
                    Some(slot) => *slot = Some(r),
                    None => results.push(Some(r)),
                }
            }
        }
    });
    // Left undone after another chunk failed; that error comes first.
    assemble(results.into_iter().flatten(), opts)
}

/// A range query's result from its chunks' (in time order).
fn assemble(
    chunks: impl Iterator<Item = Result<Vec<MatrixSeries>, QueryError>>,
    opts: &EngineOptions,
) -> Result<QueryValue, QueryError> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut series: Vec<(Labels, Vec<(i64, SampleValue)>)> = Vec::new();
    let mut points = 0usize;
    for r in chunks {
        for (labels, samples) in r? {
            points += samples.len();
            if points > opts.max_samples {
                return Err(QueryError::execution(format!(
                    "query processing would load too many samples into memory in query execution (limit {})",
                    opts.max_samples
                )));
            }
            let i = *index.entry(labels.clone()).or_insert_with(|| {
                series.push((labels, Vec::new()));
                series.len() - 1
            });
            series[i].1.extend(samples);
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(QueryValue::Matrix(series))
}

/// One series of a range query's result: labels and points.
type MatrixSeries = (Labels, Vec<(i64, SampleValue)>);

/// Range-query chunk results kept across queries, keyed by source, query,
/// step and chunk, each with the source's generation for the samples the
/// chunk read: a hit is exactly what evaluating again would give.
#[derive(Default)]
struct ChunkCache {
    entries: HashMap<String, (u64, std::sync::Arc<Vec<MatrixSeries>>, usize)>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

/// The most memory the chunk cache holds; see [`set_results_cache_bytes`].
static CHUNK_CACHE_MAX_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(64 << 20);

/// Sets the memory for cached range-query results (default 64 MiB); `0`
/// turns the cache off and empties it.
pub fn set_results_cache_bytes(bytes: usize) {
    CHUNK_CACHE_MAX_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
    let mut c = CHUNK_CACHE.lock_or_recover();
    while c.bytes > bytes {
        let Some(old) = c.order.pop_front() else {
            break;
        };
        if let Some((_, _, b)) = c.entries.remove(&old) {
            c.bytes -= b;
        }
    }
}

static CHUNK_CACHE: std::sync::LazyLock<std::sync::Mutex<ChunkCache>> =
    std::sync::LazyLock::new(Default::default);

/// About what a chunk result takes in memory.
fn result_bytes(r: &[MatrixSeries]) -> usize {
    r.iter()
        .map(|(l, s)| {
            64 + l.iter().map(|(k, v)| 48 + k.len() + v.len()).sum::<usize>()
                + s.len() * std::mem::size_of::<(i64, SampleValue)>()
        })
        .sum()
}

/// The source's generation for every range the chunk's selectors read.
fn chunk_generation(
    src: &dyn SeriesSource,
    expr: &Expr,
    (start, end): (i64, i64),
    (from, to): (i64, i64),
    opts: &EngineOptions,
) -> u64 {
    let ev = Evaluator {
        opts,
        start,
        end,
        data: HashMap::new(),
        deadline: Instant::now(),
        stream: None,
    };
    let mut wanted = Vec::new();
    ev.plan(expr, from, to, &mut wanted);
    wanted
        .iter()
        .map(|(_, lo, hi)| src.generation(*lo, *hi))
        .max()
        .unwrap_or(0)
}

/// A chunk's result from the cache when its samples have not changed since
/// it was computed; otherwise `eval`'s, kept when small.
fn cached_chunk(
    key: Option<&str>,
    (from, to): (i64, i64),
    src: &dyn SeriesSource,
    expr: &Expr,
    range: (i64, i64),
    opts: &EngineOptions,
    eval: impl FnOnce() -> Result<Vec<MatrixSeries>, QueryError>,
) -> Result<Vec<MatrixSeries>, QueryError> {
    let Some(key) = cache_key(key, (from, to)) else {
        return eval();
    };
    // Read before evaluating: a write landing meanwhile makes the entry stale.
    let generation = chunk_generation(src, expr, range, (from, to), opts);
    if let Some(r) = cache_get(&key, generation) {
        return Ok(r);
    }
    let r = eval()?;
    cache_put(key, generation, &r);
    Ok(r)
}

/// The cache key of chunk `[from, to]` of a query, `None` when results are
/// not cached.
fn cache_key(query_key: Option<&str>, (from, to): (i64, i64)) -> Option<String> {
    let max_bytes = CHUNK_CACHE_MAX_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let key = query_key.filter(|_| max_bytes > 0)?;
    Some(format!("{key}\u{0}{from}\u{0}{to}"))
}

/// A cached chunk result computed at `generation`.
fn cache_get(key: &str, generation: u64) -> Option<Vec<MatrixSeries>> {
    let hit = CHUNK_CACHE
        .lock_or_recover()
        .entries
        .get(key)
        .filter(|(g, ..)| *g == generation)
        .map(|(_, r, _)| r.clone())?;
    Some((*hit).clone())
}

/// Keeps a chunk result computed from the samples of `generation`, when
/// small enough.
fn cache_put(key: String, generation: u64, r: &[MatrixSeries]) {
    let max_bytes = CHUNK_CACHE_MAX_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let bytes = result_bytes(r);
    if bytes > max_bytes / 16 {
        return;
    }
    let mut c = CHUNK_CACHE.lock_or_recover();
    let entry = (generation, std::sync::Arc::new(r.to_vec()), bytes);
    match c.entries.insert(key.clone(), entry) {
        Some((_, _, old)) => c.bytes -= old,
        None => c.order.push_back(key),
    }
    c.bytes += bytes;
    while c.bytes > max_bytes {
        let Some(old) = c.order.pop_front() else {
            break;
        };
        if let Some((_, _, b)) = c.entries.remove(&old) {
            c.bytes -= b;
        }
    }
}

/// The chunks of a range query evaluated a series at a time in one pass
/// (`range.rs` with the source's [`SeriesSource::scan_floats`]): every
/// chunk not in the cache, from the first to the last, at once, so that
/// each selector reads its samples once for the whole span instead of once
/// a chunk, and only one series at a time is held. The results are split
/// into chunks again for the cache. `None` when the expression turns out
/// to need the chunked evaluation (a histogram sample, say).
#[allow(clippy::too_many_arguments)]
fn stream_chunks(
    src: &dyn SeriesSource,
    expr: &Expr,
    query_key: Option<&str>,
    chunks: &[(i64, i64)],
    (start, end): (i64, i64),
    step_ms: i64,
    deadline: Instant,
    opts: &EngineOptions,
) -> Option<Result<Vec<Vec<MatrixSeries>>, QueryError>> {
    let mut results: Vec<Option<Vec<MatrixSeries>>> = vec![None; chunks.len()];
    let mut keys: Vec<Option<(String, u64)>> = vec![None; chunks.len()];
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some(key) = cache_key(query_key, *chunk) {
            // Read before evaluating, as in `cached_chunk`.
            let generation = chunk_generation(src, expr, (start, end), *chunk, opts);
            results[i] = cache_get(&key, generation);
            keys[i] = Some((key, generation));
        }
    }
    let first = results.iter().position(Option::is_none);
    let last = results.iter().rposition(Option::is_none);
    if let (Some(first), Some(last)) = (first, last) {
        let (from, to) = (chunks[first].0, chunks[last].1);
        let ev = Evaluator {
            opts,
            start,
            end,
            data: HashMap::new(),
            deadline,
            stream: Some(src),
        };
        let steps = step_times(from, to, step_ms);
        let series = match ev.eval_range(expr, &steps)? {
            Ok(r) => ranged_series(r, &steps),
            Err(e) => Err(e),
        };
        let series = match series {
            Ok(s) => s,
            Err(e) => return Some(Err(e)),
        };
        for i in first..=last {
            let (lo, hi) = chunks[i];
            let part: Vec<MatrixSeries> = series
                .iter()
                .filter_map(|(labels, samples)| {
                    let a = samples.partition_point(|(t, _)| *t < lo);
                    let b = samples.partition_point(|(t, _)| *t <= hi);
                    (a < b).then(|| (labels.clone(), samples[a..b].to_vec()))
                })
                .collect();
            if results[i].is_none()
                && let Some((key, generation)) = keys[i].take()
            {
                cache_put(key, generation, &part);
            }
            results[i] = Some(part);
        }
    }
    Some(Ok(results
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()))
}

/// One chunk `[from, to]` of a range query, loaded and evaluated on its own.
fn eval_chunk(
    src: &dyn SeriesSource,
    expr: &Expr,
    range: (i64, i64),
    (from, to): (i64, i64),
    step_ms: i64,
    deadline: Instant,
    opts: &EngineOptions,
) -> Result<Vec<MatrixSeries>, QueryError> {
    let ev = Evaluator::load(src, expr, range, (from, to), deadline, opts)?;
    let steps = step_times(from, to, step_ms);
    let fast = if opts.series_at_a_time {
        ev.eval_range(expr, &steps)
    } else {
        None
    };
    if let Some(r) = fast {
        return ranged_series(r?, &steps);
    }
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut series: Vec<MatrixSeries> = Vec::new();
    let mut points = 0usize;
    for t in steps {
        ev.check_deadline()?;
        let samples = match ev.eval(expr, t)? {
            Value::Scalar(f) => vec![Sample::float(Labels::new(), f)],
            Value::Vector(v) => {
                check_unique(&v)?;
                v
            }
            _ => {
                return Err(QueryError::execution(
                    "range query evaluated to a non-vector",
                ));
            }
        };
        points += samples.len();
        ev.check_samples(points)?;
        for s in samples {
            let i = *index.entry(s.labels.clone()).or_insert_with(|| {
                series.push((s.labels.clone(), Vec::new()));
                series.len() - 1
            });
            series[i].1.push((t, s.v));
        }
    }
    Ok(series)
}

/// A series-at-a-time result as the step evaluator gives it: series with
/// equal labels merged (an error where two have a value at one step).
fn ranged_series(r: super::range::Ranged, steps: &[i64]) -> Result<Vec<MatrixSeries>, QueryError> {
    let cols = match r {
        super::range::Ranged::Scalar(v) => {
            let samples = steps
                .iter()
                .zip(v)
                .map(|(t, f)| (*t, SampleValue::Float(f)))
                .collect();
            return Ok(vec![(Labels::new(), samples)]);
        }
        super::range::Ranged::Vector(cols) => cols,
    };
    let mut merged: HashMap<Labels, super::range::Column> = HashMap::new();
    for c in cols {
        match merged.entry(c.labels.clone()) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(c);
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let m = e.get_mut();
                for i in 0..steps.len() {
                    if c.has[i] {
                        if m.has[i] {
                            return Err(QueryError::execution(
                                "vector cannot contain metrics with the same labelset",
                            ));
                        }
                        m.has[i] = true;
                        m.vals[i] = c.vals[i];
                    }
                }
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|(labels, c)| {
            let samples = steps
                .iter()
                .enumerate()
                .filter(|(i, _)| c.has[*i])
                .map(|(i, t)| (*t, SampleValue::Float(c.vals[i])))
                .collect();
            (labels, samples)
        })
        .collect())
}

/// `from, from + step, ... <= to`, without overflowing near `i64::MAX`.
fn step_times(from: i64, to: i64, step_ms: i64) -> Vec<i64> {
    (0..)
        .map_while(|i: i64| i.checked_mul(step_ms).and_then(|d| from.checked_add(d)))
        .take_while(|t| *t <= to)
        .collect()
}

/// When the query must stop: its timeout, or its caller's deadline when sooner.
fn deadline_of(opts: &EngineOptions) -> Instant {
    let now = Instant::now();
    // A timeout too long to represent is a year.
    let own = now
        .checked_add(opts.timeout)
        .unwrap_or(now + std::time::Duration::from_secs(365 * 86_400));
    opts.deadline.instant().map_or(own, |d| d.min(own))
}

/// Parses a query after checking its length and nesting on the text, and
/// checks the depth of the tree it gives.
fn parse(query: &str, opts: &EngineOptions) -> Result<Expr, QueryError> {
    super::depth::check_query_text(query, opts)?;
    let expr = parser::parse(query)
        .map_err(|e| QueryError::bad_data(format!("invalid parameter \"query\": {e}")))?;
    super::depth::check_expr_depth(&expr, opts)?;
    Ok(expr)
}

fn check_unique(v: &[Sample]) -> Result<(), QueryError> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for s in v {
        if !seen.insert(&s.labels) {
            return Err(QueryError::execution(
                "vector cannot contain metrics with the same labelset",
            ));
        }
    }
    Ok(())
}

/// Loaded samples and the context of one query.
pub(crate) struct Evaluator<'a> {
    pub opts: &'a EngineOptions,
    /// Query start and end, for `@ start()` and `@ end()`.
    start: i64,
    end: i64,
    /// Series loaded for each selector node, keyed by the node's address
    /// (the tree is borrowed, unmoved, for the whole query).
    pub(crate) data: HashMap<usize, Vec<Series>>,
    deadline: Instant,
    /// Where selectors not in `data` are read from a series at a time
    /// (see `range.rs`); `None` when everything was loaded up front.
    pub(crate) stream: Option<&'a dyn SeriesSource>,
}

pub(crate) fn key(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

impl<'a> Evaluator<'a> {
    /// Loads what evaluating at times within `[from, to]` reads, for a query
    /// over `[start, end]` (what `@ start()` and `@ end()` mean).
    #[allow(clippy::too_many_arguments)]
    fn load(
        src: &dyn SeriesSource,
        expr: &'a Expr,
        (start, end): (i64, i64),
        (from, to): (i64, i64),
        deadline: Instant,
        opts: &'a EngineOptions,
    ) -> Result<Self, QueryError> {
        let mut ev = Evaluator {
            opts,
            start,
            end,
            data: HashMap::new(),
            deadline,
            stream: None,
        };
        let mut wanted = Vec::new();
        ev.plan(expr, from, to, &mut wanted);
        let mut loaded = 0usize;
        for (vs, lo, hi) in wanted {
            ev.check_deadline()?;
            let series = select(src, vs, lo, hi)?;
            ev.check_series(series.len())?;
            loaded += series.iter().map(|s| s.samples.len()).sum::<usize>();
            ev.check_samples(loaded)?;
            ev.data.insert(key(vs), series);
        }
        Ok(ev)
    }

    pub fn check_deadline(&self) -> Result<(), QueryError> {
        if Instant::now() > self.deadline {
            return Err(QueryError::timeout());
        }
        self.opts
            .deadline
            .check()
            .map_err(|e| QueryError::from_store(e, self.opts))
    }

    pub fn check_samples(&self, n: usize) -> Result<(), QueryError> {
        if n > self.opts.max_samples {
            return Err(QueryError::too_many_samples(self.opts.max_samples));
        }
        Ok(())
    }

    /// The series of one selector.
    pub fn check_series(&self, n: usize) -> Result<(), QueryError> {
        if n > self.opts.max_series {
            return Err(QueryError::too_many_series(self.opts.max_series));
        }
        Ok(())
    }

    /// Collects each selector with the time range `[lo, hi]` its samples
    /// must come from when the expression is evaluated within `[lo_t, hi_t]`.
    fn plan<'e>(
        &self,
        expr: &'e Expr,
        lo_t: i64,
        hi_t: i64,
        out: &mut Vec<(&'e VectorSelector, i64, i64)>,
    ) {
        match expr {
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, lo_t, hi_t, out);
                }
                self.plan(&a.expr, lo_t, hi_t, out);
            }
            Expr::Unary(u) => self.plan(&u.expr, lo_t, hi_t, out),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo_t, hi_t, out);
                self.plan(&b.rhs, lo_t, hi_t, out);
            }
            Expr::Paren(p) => self.plan(&p.expr, lo_t, hi_t, out),
            Expr::Subquery(sq) => {
                let lo = self.ref_time(sq.at.as_ref(), sq.offset.as_ref(), lo_t);
                let hi = self.ref_time(sq.at.as_ref(), sq.offset.as_ref(), hi_t);
                self.plan(&sq.expr, lo.saturating_sub(duration_ms(&sq.range)), hi, out);
            }
            Expr::VectorSelector(vs) => {
                let lo = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), lo_t);
                let hi = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), hi_t);
                out.push((vs, lo.saturating_sub(self.opts.lookback_ms), hi));
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let lo = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), lo_t);
                let hi = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), hi_t);
                out.push((vs, lo.saturating_sub(duration_ms(&ms.range)), hi));
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, lo_t, hi_t, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// The time a selector reads at when evaluated at `t`: `@` fixes it,
    /// `offset` moves it back.
    pub fn ref_time(&self, at: Option<&AtModifier>, offset: Option<&Offset>, t: i64) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(*st),
        };
        let off = match offset {
            None => 0,
            Some(Offset::Pos(d)) => duration_ms(d),
            Some(Offset::Neg(d)) => duration_ms(d).saturating_neg(),
        };
        base.saturating_sub(off)
    }

    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => Ok(match self.eval(&u.expr, t)? {
                Value::Scalar(f) => Value::Scalar(-f),
                Value::Vector(v) => Value::Vector(
                    v.into_iter()
                        .map(|s| match s.v {
                            SampleValue::Float(f) => Sample::float(drop_name(s.labels), -f),
                            // A histogram is negated bucket-wise, as `-1 * h`.
                            SampleValue::Histogram(h) => {
                                let mut n = super::histogram::sparse(&h);
                                n.scale(-1.0);
                                Sample {
                                    labels: drop_name(s.labels),
                                    v: SampleValue::Histogram(Box::new(n.to_native())),
                                }
                            }
                        })
                        .collect(),
                ),
                _ => return Err(QueryError::execution("unary minus on a non-numeric value")),
            }),
            Expr::VectorSelector(vs) => Ok(Value::Vector(
                self.instant_selector(vs, t)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            )),
            Expr::MatrixSelector(ms) => {
                let (m, _, _) = self.range_selector(&ms.vs, duration_ms(&ms.range), t);
                Ok(Value::Matrix(m))
            }
            Expr::Subquery(sq) => {
                let (m, _, _) = self.subquery(sq, t)?;
                Ok(Value::Matrix(m))
            }
            Expr::Binary(b) => self.eval_binary(b, t),
            Expr::Aggregate(a) => self.eval_aggregate(a, t),
            Expr::Call(c) => self.eval_call(c, t),
            Expr::Extension(_) => Err(QueryError::bad_data(
                "extension expressions are not supported",
            )),
        }
    }

    pub fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>, QueryError> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            _ => Err(QueryError::execution("expected an instant vector")),
        }
    }

    pub fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Value::Scalar(f) => Ok(f),
            _ => Err(QueryError::execution("expected a scalar")),
        }
    }

    pub fn eval_string(&self, expr: &Expr, t: i64) -> Result<String, QueryError> {
        match self.eval(expr, t)? {
            Value::Str(s) => Ok(s),
            _ => Err(QueryError::execution("expected a string")),
        }
    }

    /// The latest sample of each series at or before the reference time,
    /// within the lookback window `(rt - lookback, rt]`, unless it is a
    /// staleness marker; with each sample's own timestamp.
    pub fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<(Sample, i64)> {
        let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), t);
        let Some(series) = self.data.get(&key(vs)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in series {
            let idx = s.samples.partition_point(|(ts, _)| *ts <= rt);
            if idx == 0 {
                continue;
            }
            let (ts, v) = &s.samples[idx - 1];
            if *ts <= rt.saturating_sub(self.opts.lookback_ms) {
                continue;
            }
            if matches!(v, SampleValue::Float(f) if is_stale_nan(*f)) {
                continue;
            }
            out.push((
                Sample {
                    labels: s.labels.clone(),
                    v: v.clone(),
                },
                *ts,
            ));
        }
        out
    }

    /// The samples of each series in `(rt - range, rt]`, staleness markers
    /// left out; with the window's start and end.
    pub fn range_selector(
        &self,
        vs: &VectorSelector,
        range: i64,
        t: i64,
    ) -> (Vec<Series>, i64, i64) {
        let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), t);
        let from = rt.saturating_sub(range);
        let mut out = Vec::new();
        for s in self.data.get(&key(vs)).into_iter().flatten() {
            let lo = s.samples.partition_point(|(ts, _)| *ts <= from);
            let hi = s.samples.partition_point(|(ts, _)| *ts <= rt);
            let samples: Vec<_> = s.samples[lo..hi]
                .iter()
                .filter(|(_, v)| !matches!(v, SampleValue::Float(f) if is_stale_nan(*f)))
                .cloned()
                .collect();
            if !samples.is_empty() {
                out.push(Series {
                    labels: s.labels.clone(),
                    samples,
                });
            }
        }
        (out, from, rt)
    }

    /// Evaluates the inner expression at every multiple of the step in
    /// `(rt - range, rt]`.
    pub fn subquery(
        &self,
        sq: &parser::SubqueryExpr,
        t: i64,
    ) -> Result<(Vec<Series>, i64, i64), QueryError> {
        let rt = self.ref_time(sq.at.as_ref(), sq.offset.as_ref(), t);
        let range = duration_ms(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map(duration_ms)
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
        let from = rt.saturating_sub(range);
        // As a range query's: a subquery of `[10y:1ms]` once allocated
        // until the process died.
        if range / step > MAX_POINTS_PER_SERIES {
            return Err(QueryError::bad_data(format!(
                "subquery range {}ms with step {step}ms exceeds the limit of {MAX_POINTS_PER_SERIES} points per series: use a larger step",
                range
            )));
        }
        let first = from
            .div_euclid(step)
            .saturating_mul(step)
            .saturating_add(step);
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut out: Vec<Series> = Vec::new();
        // The points this evaluation holds, against the samples limit.
        let mut points = 0usize;
        let mut ts = first;
        while ts <= rt {
            self.check_deadline()?;
            let v = self.eval_vector(&sq.expr, ts)?;
            points += v.len();
            self.check_samples(points)?;
            for s in v {
                let i = *index.entry(s.labels.clone()).or_insert_with(|| {
                    out.push(Series {
                        labels: s.labels.clone(),
                        samples: Vec::new(),
                    });
                    out.len() - 1
                });
                out[i].samples.push((ts, s.v));
            }
            let Some(next) = ts.checked_add(step) else {
                break;
            };
            ts = next;
        }
        Ok((out, from, rt))
    }
}

/// A selector's matchers, with its name as one: a group for each `or`
/// alternative (one when it has none).
pub(crate) fn matcher_groups(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let convert = |ms: &[promql_parser::label::Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = ms
            .iter()
            .map(|m| Matcher {
                name: m.name.clone(),
                op: match &m.op {
                    ParserMatchOp::Equal => MatchOp::Equal,
                    ParserMatchOp::NotEqual => MatchOp::NotEqual,
                    ParserMatchOp::Re(r) => MatchOp::Re(r.clone()),
                    ParserMatchOp::NotRe(r) => MatchOp::NotRe(r.clone()),
                },
                value: m.value.clone(),
            })
            .collect();
        if let Some(name) = &vs.name {
            out.push(Matcher {
                name: NAME_LABEL.into(),
                op: MatchOp::Equal,
                value: name.clone(),
            });
        }
        out
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![convert(&vs.matchers.matchers)]
    } else {
        vs.matchers.or_matchers.iter().map(|g| convert(g)).collect()
    }
}

/// Loads one selector's series.
fn select(
    src: &dyn SeriesSource,
    vs: &VectorSelector,
    lo: i64,
    hi: i64,
) -> Result<Vec<Series>, QueryError> {
    let groups = matcher_groups(vs);
    let mut all: Vec<Series> = Vec::new();
    // A series matched by several `or` groups is loaded once.
    let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let single = groups.len() == 1;
    for g in groups {
        let found = src.select(&g, lo, hi)?;
        if single {
            all = found;
            continue;
        }
        for s in found {
            if seen.insert(s.labels.clone()) {
                all.push(s);
            }
        }
    }
    Ok(all)
}

pub(crate) fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn system_time_ms(st: SystemTime) -> i64 {
    match st.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// The labels without `__name__`.
pub(crate) fn drop_name(mut labels: Labels) -> Labels {
    labels.retain(|(k, _)| k != NAME_LABEL);
    labels
}

/// Sets a label, or removes it when the value is empty.
pub(crate) fn set_label(labels: &mut Labels, name: &str, value: &str) {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].1 = value.to_string(),
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, (name.to_string(), value.to_string())),
    }
}
