//! PromQL functions: range-vector functions (`rate`, `*_over_time`,
//! `predict_linear`, ...), element-wise math and trigonometry, label
//! manipulation, the histogram functions (`histogram_quantile`,
//! `histogram_fraction`, ...) and the time functions. Range functions take
//! native histograms where Prometheus does (`rate`, `increase`, `delta`,
//! `irate`, `idelta`, `sum_over_time`, `avg_over_time`, `last_over_time`,
//! `resets`, `changes`, the counting ones); the others read only floats.

use periscope_proto::{Labels, NAME_LABEL, NativeHistogram, SampleValue, label};
use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::{Call, Expr};

use super::QueryError;
use super::eval::{Evaluator, Sample, Value, drop_name, duration_ms, set_label};
use super::histogram::{Sparse, histogram_fraction, histogram_variance, sparse};
use super::source::Series;
use super::value::bucket_bounds;

/// Go's `math.Min`: NaN if either is NaN.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `math.Max`: NaN if either is NaN.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The φ-quantile of values, interpolating linearly between ranks as
/// Prometheus does.
pub(crate) fn quantile(q: f64, mut vals: Vec<f64>) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(f64::total_cmp);
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lower as usize] * (1.0 - w) + vals[upper as usize] * w
}

/// The smallest value, NaN only when every value is NaN (PromQL's `min`).
pub(crate) fn min_of(vals: impl IntoIterator<Item = f64>) -> f64 {
    vals.into_iter()
        .fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m })
}

/// The largest value, NaN only when every value is NaN (PromQL's `max`).
pub(crate) fn max_of(vals: impl IntoIterator<Item = f64>) -> f64 {
    vals.into_iter()
        .fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m })
}

/// Floats of a range window.
fn floats(s: &Series) -> Vec<(i64, f64)> {
    s.samples
        .iter()
        .filter_map(|(t, v)| match v {
            SampleValue::Float(f) => Some((*t, *f)),
            SampleValue::Histogram(_) => None,
        })
        .collect()
}

/// `rate`, `increase` and `delta`: the change over the window, corrected
/// for counter resets, extrapolated towards the window's edges (by at
/// most half an average sample interval, and for counters not below zero).
fn extrapolated_rate(
    pts: &[(i64, f64)],
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let mut result = pts[pts.len() - 1].1 - pts[0].1;
    if counter {
        for w in pts.windows(2) {
            if w[1].1 < w[0].1 {
                result += w[0].1;
            }
        }
    }
    Some(extrapolate(pts, result, start, end, counter, per_second))
}

/// The places of a series' counter resets: each `i` where `pts[i]` is below
/// `pts[i - 1]`, for [`counter_rate_window`].
pub(crate) fn counter_resets(pts: &[(i64, f64)], out: &mut Vec<usize>) {
    out.clear();
    out.extend((1..pts.len()).filter(|i| pts[*i].1 < pts[*i - 1].1));
}

/// `rate` (`per_second`) or `increase` over the window `pts[lo..hi]` of a
/// series whose resets [`counter_resets`] found: the same additions in the
/// same order as [`range_function_floats`], without looking at every
/// sample of every window.
pub(crate) fn counter_rate_window(
    pts: &[(i64, f64)],
    (lo, hi): (usize, usize),
    resets: &[usize],
    start: i64,
    end: i64,
    per_second: bool,
) -> Option<f64> {
    if hi < lo + 2 {
        return None;
    }
    let mut result = pts[hi - 1].1 - pts[lo].1;
    let a = resets.partition_point(|i| *i <= lo);
    for i in resets[a..].iter().take_while(|i| **i < hi) {
        result += pts[*i - 1].1;
    }
    Some(extrapolate(
        &pts[lo..hi],
        result,
        start,
        end,
        true,
        per_second,
    ))
}

/// The change `result` between a window's first and last sample,
/// extrapolated towards the window's edges.
fn extrapolate(
    pts: &[(i64, f64)],
    result: f64,
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> f64 {
    let (first_t, first) = pts[0];
    let last_t = pts[pts.len() - 1].0;
    let window = Extrapolation {
        first_t,
        last_t,
        samples: pts.len(),
        start,
        end,
    };
    result * window.factor(counter, first, result, per_second)
}

/// Where the samples of a window lie within it, for extrapolating a change.
struct Extrapolation {
    first_t: i64,
    last_t: i64,
    samples: usize,
    start: i64,
    end: i64,
}

impl Extrapolation {
    /// The factor the change between the first and last sample is
    /// multiplied by. `first` and `result` are the first value and the
    /// change (for histograms, their counts): a counter is not
    /// extrapolated to before the time it would have been zero.
    fn factor(&self, counter: bool, first: f64, result: f64, per_second: bool) -> f64 {
        let mut to_start = (self.first_t - self.start) as f64 / 1000.0;
        let mut to_end = (self.end - self.last_t) as f64 / 1000.0;
        let sampled = (self.last_t - self.first_t) as f64 / 1000.0;
        let avg_step = sampled / (self.samples - 1) as f64;
        let threshold = avg_step * 1.1;
        if to_start >= threshold {
            to_start = avg_step / 2.0;
        }
        if counter && result > 0.0 && first >= 0.0 {
            let to_zero = sampled * (first / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        if to_end >= threshold {
            to_end = avg_step / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        if per_second {
            factor /= (self.end - self.start) as f64 / 1000.0;
        }
        factor
    }
}

/// `rate`, `increase` and `delta` over native histograms: bucket-wise at
/// the coarsest schema of the window, a reset (see
/// [`Sparse::is_reset_from`]) adding back the histogram before it, then
/// extrapolated as floats are, counts standing in for values.
fn histogram_rate(
    hs: &[(i64, &NativeHistogram)],
    start: i64,
    end: i64,
    counter: bool,
    per_second: bool,
) -> Option<Sparse> {
    let [(first_t, first), .., (last_t, last)] = hs else {
        return None;
    };
    let first = sparse(first);
    let mut result = sparse(last);
    let schema = if counter {
        hs.iter()
            .map(|(_, h)| h.schema)
            .min()
            .unwrap_or(result.schema)
    } else {
        first.schema.min(result.schema)
    };
    result.reduce(schema);
    result.add_scaled(&first, -1.0);
    if counter {
        let mut prev = first.clone();
        for (_, h) in &hs[1..] {
            let curr = sparse(h);
            if curr.is_reset_from(&prev) {
                result.add_scaled(&prev, 1.0);
            }
            prev = curr;
        }
    }
    let window = Extrapolation {
        first_t: *first_t,
        last_t: *last_t,
        samples: hs.len(),
        start,
        end,
    };
    result.scale(window.factor(counter, first.count, result.count, per_second));
    Some(result)
}

/// `irate` and `idelta` over the last two histograms of a window: their
/// difference (for `irate` the last one alone after a reset), per second
/// for `irate`.
fn histogram_instant(
    name: &str,
    (t0, h0): (i64, &NativeHistogram),
    (t1, h1): (i64, &NativeHistogram),
) -> Sparse {
    let (prev, mut result) = (sparse(h0), sparse(h1));
    let rate = name == "irate";
    if !(rate && result.is_reset_from(&prev)) {
        result.add_scaled(&prev, -1.0);
    }
    if rate {
        result.divide((t1 - t0) as f64 / 1000.0);
    }
    result
}

/// Counter resets (`resets`) or value changes (`changes`) over a window
/// holding histograms: a switch between float and histogram counts as one.
fn resets_or_changes(name: &str, samples: &[(i64, SampleValue)]) -> f64 {
    let resets = name == "resets";
    let mut n = 0usize;
    let mut prev: Option<Sparse> = None;
    for w in samples.windows(2) {
        let hit = match (&w[0].1, &w[1].1) {
            (SampleValue::Float(a), SampleValue::Float(b)) => {
                if resets {
                    b < a
                } else {
                    a != b && !(a.is_nan() && b.is_nan())
                }
            }
            (SampleValue::Histogram(a), SampleValue::Histogram(b)) => {
                let a = prev.take().unwrap_or_else(|| sparse(a));
                let b = sparse(b);
                let hit = if resets {
                    b.is_reset_from(&a)
                } else {
                    !b.same_as(&a)
                };
                prev = Some(b);
                hit
            }
            _ => true,
        };
        if !matches!(w[1].1, SampleValue::Histogram(_)) {
            prev = None;
        }
        n += usize::from(hit);
    }
    n as f64
}

/// The value of a histogram result.
fn histogram_value(h: &Sparse) -> SampleValue {
    SampleValue::Histogram(Box::new(h.to_native()))
}

/// Slope of the least-squares line through the points, per second.
fn deriv(pts: &[(i64, f64)]) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    Some(least_squares(pts, pts[0].0).0)
}

/// The least-squares line through the points, with time in seconds from
/// `origin`: (slope, intercept).
fn least_squares(pts: &[(i64, f64)], origin: i64) -> (f64, f64) {
    let n = pts.len() as f64;
    let xs: Vec<f64> = pts
        .iter()
        .map(|(ts, _)| (ts - origin) as f64 / 1000.0)
        .collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = pts.iter().map(|(_, v)| v).sum::<f64>() / n;
    let cov: f64 = xs
        .iter()
        .zip(pts)
        .map(|(x, (_, y))| (x - mx) * (y - my))
        .sum();
    let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let slope = cov / var;
    (slope, my - slope * mx)
}

/// The least-squares line through the points, evaluated `ahead` seconds
/// after `t` (`predict_linear`). A constant series predicts itself.
fn predict_linear(pts: &[(i64, f64)], t: i64, ahead: f64) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let y0 = pts[0].1;
    if pts.iter().all(|(_, v)| *v == y0) {
        return Some(if y0.is_infinite() { f64::NAN } else { y0 });
    }
    let (slope, intercept) = least_squares(pts, t);
    Some(intercept + slope * ahead)
}

/// Holt's double exponential smoothing: the smoothed value at the last
/// point, with smoothing factor `sf` and trend factor `tf`, both in (0, 1).
fn double_exponential_smoothing(pts: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, pts[0].1);
    let mut trend = pts[1].1 - pts[0].1;
    for (i, (_, v)) in pts.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (s1 - s0) + (1.0 - tf) * trend;
        }
        let next = sf * v + (1.0 - sf) * (s1 + trend);
        (s0, s1) = (s1, next);
    }
    Some(s1)
}

/// Functions whose result keeps the metric name.
pub(crate) fn keeps_name(name: &str) -> bool {
    matches!(
        name,
        "last_over_time" | "sort" | "sort_desc" | "label_replace" | "label_join"
    )
}

impl Evaluator<'_> {
    /// The series of a range-vector argument and its window `(start, end]`.
    fn range_arg(&self, e: &Expr, t: i64) -> Result<(Vec<Series>, i64, i64), QueryError> {
        match e {
            Expr::MatrixSelector(ms) => Ok(self.range_selector(&ms.vs, duration_ms(&ms.range), t)),
            Expr::Subquery(sq) => self.subquery(sq, t),
            Expr::Paren(p) => self.range_arg(&p.expr, t),
            _ => Err(QueryError::execution("expected a range vector")),
        }
    }

    pub(crate) fn eval_call(&self, c: &Call, t: i64) -> Result<Value, QueryError> {
        let name = c.func.name;
        let args = &c.args.args;
        let arg = |i: usize| -> Result<&Expr, QueryError> {
            args.get(i)
                .map(|b| b.as_ref())
                .ok_or_else(|| QueryError::bad_data(format!("missing argument {i} of {name}")))
        };
        let mut out: Vec<Sample> = match name {
            "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "deriv"
            | "resets"
            | "changes"
            | "avg_over_time"
            | "min_over_time"
            | "max_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "last_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "present_over_time"
            | "quantile_over_time"
            | "predict_linear"
            | "double_exponential_smoothing" => {
                let (p, range_expr) = match name {
                    "quantile_over_time" => ([self.eval_scalar(arg(0)?, t)?, f64::NAN], arg(1)?),
                    "predict_linear" => ([self.eval_scalar(arg(1)?, t)?, f64::NAN], arg(0)?),
                    "double_exponential_smoothing" => (
                        [self.eval_scalar(arg(1)?, t)?, self.eval_scalar(arg(2)?, t)?],
                        arg(0)?,
                    ),
                    _ => ([f64::NAN; 2], arg(0)?),
                };
                let (series, start, end) = self.range_arg(range_expr, t)?;
                if name == "double_exponential_smoothing" && !series.is_empty() {
                    for (what, f) in [("smoothing", p[0]), ("trend", p[1])] {
                        if !(f > 0.0 && f < 1.0) {
                            return Err(QueryError::execution(format!(
                                "invalid {what} factor. Expected: 0 < {} < 1, got: {}",
                                if what == "smoothing" { "sf" } else { "tf" },
                                super::value::float_string(f)
                            )));
                        }
                    }
                }
                let window = Window { start, end, t };
                series
                    .iter()
                    .filter_map(|s| {
                        let v = range_function(name, s, p, &window)?;
                        Some(Sample {
                            labels: s.labels.clone(),
                            v,
                        })
                    })
                    .collect()
            }
            "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn"
            | "round" | "clamp" | "clamp_min" | "clamp_max" | "sin" | "cos" | "tan" | "asin"
            | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh" | "atanh" | "deg"
            | "rad" => {
                let v = self.eval_vector(arg(0)?, t)?;
                let p1 = match args.get(1) {
                    Some(e) => self.eval_scalar(e, t)?,
                    None => 1.0,
                };
                let p2 = match args.get(2) {
                    Some(e) => self.eval_scalar(e, t)?,
                    None => f64::NAN,
                };
                if name == "clamp" && p2 < p1 {
                    return Ok(Value::Vector(Vec::new()));
                }
                v.into_iter()
                    .filter_map(|s| {
                        let f = s.as_float()?;
                        let r = match name {
                            "abs" => f.abs(),
                            "ceil" => f.ceil(),
                            "floor" => f.floor(),
                            "exp" => f.exp(),
                            "sqrt" => f.sqrt(),
                            "ln" => f.ln(),
                            "log2" => f.log2(),
                            "log10" => f.log10(),
                            "sgn" if f > 0.0 => 1.0,
                            "sgn" if f < 0.0 => -1.0,
                            "sgn" => f,
                            // Rounds half up to a multiple of `to_nearest`.
                            "round" => {
                                let inv = 1.0 / p1;
                                (f * inv + 0.5).floor() / inv
                            }
                            "clamp" => go_max(p1, go_min(p2, f)),
                            "clamp_min" => go_max(p1, f),
                            "clamp_max" => go_min(p1, f),
                            "sin" => f.sin(),
                            "cos" => f.cos(),
                            "tan" => f.tan(),
                            "asin" => f.asin(),
                            "acos" => f.acos(),
                            "atan" => f.atan(),
                            "sinh" => f.sinh(),
                            "cosh" => f.cosh(),
                            "tanh" => f.tanh(),
                            "asinh" => f.asinh(),
                            "acosh" => f.acosh(),
                            "atanh" => f.atanh(),
                            "deg" => f.to_degrees(),
                            _ => f.to_radians(),
                        };
                        Some(Sample::float(s.labels, r))
                    })
                    .collect()
            }
            "time" => return Ok(Value::Scalar(t as f64 / 1000.0)),
            "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
            "vector" => vec![Sample::float(Labels::new(), self.eval_scalar(arg(0)?, t)?)],
            "scalar" => {
                let v = self.eval_vector(arg(0)?, t)?;
                let f = match v.as_slice() {
                    [s] => s.as_float().unwrap_or(f64::NAN),
                    _ => f64::NAN,
                };
                return Ok(Value::Scalar(f));
            }
            "timestamp" => {
                let mut inner = arg(0)?;
                while let Expr::Paren(p) = inner {
                    inner = &p.expr;
                }
                match inner {
                    // A selector's samples keep their own timestamps.
                    Expr::VectorSelector(vs) => self
                        .instant_selector(vs, t)
                        .into_iter()
                        .map(|(s, ts)| Sample::float(s.labels, ts as f64 / 1000.0))
                        .collect(),
                    e => self
                        .eval_vector(e, t)?
                        .into_iter()
                        .map(|s| Sample::float(s.labels, t as f64 / 1000.0))
                        .collect(),
                }
            }
            "absent" | "absent_over_time" => {
                let present = if name == "absent" {
                    !self.eval_vector(arg(0)?, t)?.is_empty()
                } else {
                    !self.range_arg(arg(0)?, t)?.0.is_empty()
                };
                if present {
                    Vec::new()
                } else {
                    vec![Sample::float(absent_labels(arg(0)?), 1.0)]
                }
            }
            "sort" | "sort_desc" => {
                let mut v: Vec<Sample> = self
                    .eval_vector(arg(0)?, t)?
                    .into_iter()
                    .filter(|s| s.as_float().is_some())
                    .collect();
                let desc = name == "sort_desc";
                v.sort_by(|a, b| {
                    let (x, y) = (
                        a.as_float().unwrap_or(f64::NAN),
                        b.as_float().unwrap_or(f64::NAN),
                    );
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
                v
            }
            "label_replace" => {
                let v = self.eval_vector(arg(0)?, t)?;
                let dst = self.eval_string(arg(1)?, t)?;
                let repl = self.eval_string(arg(2)?, t)?;
                let src = self.eval_string(arg(3)?, t)?;
                let re_src = self.eval_string(arg(4)?, t)?;
                let re = regex::Regex::new(&format!("^(?s:{re_src})$")).map_err(|e| {
                    QueryError::bad_data(format!(
                        "invalid regular expression in label_replace(): {e}"
                    ))
                })?;
                check_label_name(&dst)?;
                v.into_iter()
                    .map(|mut s| {
                        let value = label(&s.labels, &src).unwrap_or("").to_string();
                        if let Some(caps) = re.captures(&value) {
                            let mut res = String::new();
                            caps.expand(&repl, &mut res);
                            set_label(&mut s.labels, &dst, &res);
                        }
                        s
                    })
                    .collect()
            }
            "label_join" => {
                let v = self.eval_vector(arg(0)?, t)?;
                let dst = self.eval_string(arg(1)?, t)?;
                let sep = self.eval_string(arg(2)?, t)?;
                check_label_name(&dst)?;
                let mut srcs = Vec::new();
                for e in &args[3..] {
                    srcs.push(self.eval_string(e, t)?);
                }
                v.into_iter()
                    .map(|mut s| {
                        let joined: Vec<&str> = srcs
                            .iter()
                            .map(|n| label(&s.labels, n).unwrap_or(""))
                            .collect();
                        let joined = joined.join(&sep);
                        set_label(&mut s.labels, &dst, &joined);
                        s
                    })
                    .collect()
            }
            "histogram_quantile" => {
                let q = self.eval_scalar(arg(0)?, t)?;
                histogram_quantile(q, self.eval_vector(arg(1)?, t)?)
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" | "histogram_fraction" => {
                let (bounds, v) = if name == "histogram_fraction" {
                    let lower = self.eval_scalar(arg(0)?, t)?;
                    let upper = self.eval_scalar(arg(1)?, t)?;
                    ((lower, upper), self.eval_vector(arg(2)?, t)?)
                } else {
                    ((f64::NAN, f64::NAN), self.eval_vector(arg(0)?, t)?)
                };
                v.into_iter()
                    .filter_map(|s| match &s.v {
                        SampleValue::Histogram(h) => Some(Sample::float(
                            s.labels,
                            match name {
                                "histogram_count" => h.count,
                                "histogram_sum" => h.sum,
                                "histogram_avg" => h.sum / h.count,
                                "histogram_stdvar" => histogram_variance(h),
                                "histogram_stddev" => histogram_variance(h).sqrt(),
                                _ => histogram_fraction(bounds.0, bounds.1, h),
                            },
                        )),
                        SampleValue::Float(_) => None,
                    })
                    .collect()
            }
            "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year"
            | "days_in_month" | "month" | "year" => {
                let v = match args.first() {
                    Some(e) => self.eval_vector(e, t)?,
                    None => vec![Sample::float(Labels::new(), t as f64 / 1000.0)],
                };
                v.into_iter()
                    .filter_map(|s| {
                        let f = s.as_float()?;
                        Some(Sample::float(s.labels, date_part(name, f)))
                    })
                    .collect()
            }
            other => {
                return Err(QueryError::bad_data(format!(
                    "function {other:?} is not supported"
                )));
            }
        };
        if !keeps_name(name) {
            for s in &mut out {
                s.labels = drop_name(std::mem::take(&mut s.labels));
            }
        }
        Ok(Value::Vector(out))
    }
}

/// A range window `(start, end]` and the evaluation time it was taken at.
struct Window {
    start: i64,
    end: i64,
    t: i64,
}

/// A range function over one window of a series. Floats go through
/// [`range_function_floats`]; histograms are added, subtracted and
/// compared bucket-wise where Prometheus does so, ignored by the functions
/// of floats alone (`min_over_time`, `deriv`, ...), and a window mixing both
/// gives no result where they cannot be combined (`rate`, `sum_over_time`).
fn range_function(name: &str, s: &Series, p: [f64; 2], w: &Window) -> Option<SampleValue> {
    let (start, end) = (w.start, w.end);
    let hists: Vec<(i64, &NativeHistogram)> = s
        .samples
        .iter()
        .filter_map(|(t, v)| match v {
            SampleValue::Histogram(h) => Some((*t, h.as_ref())),
            SampleValue::Float(_) => None,
        })
        .collect();
    let mixed = !hists.is_empty() && hists.len() < s.samples.len();
    match name {
        "count_over_time" => return Some(SampleValue::Float(s.samples.len() as f64)),
        "present_over_time" => return Some(SampleValue::Float(1.0)),
        "predict_linear" => return predict_linear(&floats(s), w.t, p[0]).map(SampleValue::Float),
        "double_exponential_smoothing" => {
            return double_exponential_smoothing(&floats(s), p[0], p[1]).map(SampleValue::Float);
        }
        _ if hists.is_empty() => {
            return range_function_floats(name, &floats(s), p[0], start, end)
                .map(SampleValue::Float);
        }
        _ => {}
    }
    match name {
        "last_over_time" => s.samples.last().map(|(_, v)| v.clone()),
        "resets" | "changes" => Some(SampleValue::Float(resets_or_changes(name, &s.samples))),
        "rate" | "increase" | "delta" if !mixed => {
            histogram_rate(&hists, start, end, name != "delta", name == "rate")
                .map(|h| histogram_value(&h))
        }
        "irate" | "idelta" => match &s.samples[..] {
            [
                ..,
                (t0, SampleValue::Histogram(a)),
                (t1, SampleValue::Histogram(b)),
            ] => Some(histogram_value(&histogram_instant(
                name,
                (*t0, a),
                (*t1, b),
            ))),
            [.., (t0, SampleValue::Float(a)), (t1, SampleValue::Float(b))] => {
                range_function_floats(name, &[(*t0, *a), (*t1, *b)], p[0], start, end)
                    .map(SampleValue::Float)
            }
            _ => None,
        },
        "sum_over_time" | "avg_over_time" if !mixed => {
            let mut sum = sparse(hists[0].1);
            for (_, h) in &hists[1..] {
                sum.add_scaled(&sparse(h), 1.0);
            }
            if name == "avg_over_time" {
                sum.divide(hists.len() as f64);
            }
            Some(histogram_value(&sum))
        }
        "rate" | "increase" | "delta" | "sum_over_time" | "avg_over_time" => None,
        _ => range_function_floats(name, &floats(s), p[0], start, end).map(SampleValue::Float),
    }
}

/// A range function over the float samples of one window `(start, end]`.
pub(crate) fn range_function_floats(
    name: &str,
    pts: &[(i64, f64)],
    q: f64,
    start: i64,
    end: i64,
) -> Option<f64> {
    match name {
        "count_over_time" => return Some(pts.len() as f64),
        "present_over_time" => return Some(1.0),
        _ => {}
    }
    if pts.is_empty() {
        return None;
    }
    let vals = || pts.iter().map(|(_, v)| *v);
    let n = pts.len() as f64;
    let mean = || vals().sum::<f64>() / n;
    Some(match name {
        "rate" => extrapolated_rate(pts, start, end, true, true)?,
        "increase" => extrapolated_rate(pts, start, end, true, false)?,
        "delta" => extrapolated_rate(pts, start, end, false, false)?,
        "irate" | "idelta" => {
            let [.., (t0, v0), (t1, v1)] = pts else {
                return None;
            };
            let mut d = v1 - v0;
            if name == "irate" {
                if v1 < v0 {
                    d = *v1;
                }
                d /= (t1 - t0) as f64 / 1000.0;
            }
            d
        }
        "deriv" => deriv(pts)?,
        "resets" => pts.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64,
        "changes" => pts
            .windows(2)
            .filter(|w| w[1].1 != w[0].1 && !(w[1].1.is_nan() && w[0].1.is_nan()))
            .count() as f64,
        "avg_over_time" => mean(),
        "sum_over_time" => vals().sum(),
        "min_over_time" => min_of(vals()),
        "max_over_time" => max_of(vals()),
        "last_over_time" => pts[pts.len() - 1].1,
        "stdvar_over_time" => {
            let m = mean();
            vals().map(|v| (v - m).powi(2)).sum::<f64>() / n
        }
        "stddev_over_time" => {
            let m = mean();
            (vals().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt()
        }
        "quantile_over_time" => quantile(q, vals().collect()),
        _ => return None,
    })
}

/// The labels `absent()` reports: the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut out = Labels::new();
    let mut seen_twice = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == NAME_LABEL || !matches!(m.op, ParserMatchOp::Equal) {
            continue;
        }
        if label(&out, &m.name).is_some() {
            seen_twice.push(m.name.clone());
        }
        set_label(&mut out, &m.name, &m.value);
    }
    out.retain(|(k, _)| !seen_twice.contains(k));
    out
}

fn check_label_name(name: &str) -> Result<(), QueryError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(QueryError::bad_data(format!(
            "invalid destination label name: {name:?}"
        )))
    }
}

/// `histogram_quantile` over classic buckets (series with `le`, grouped by
/// their other labels) and over native histograms.
fn histogram_quantile(q: f64, v: Vec<Sample>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    for s in v {
        match &s.v {
            SampleValue::Histogram(h) => {
                out.push(Sample::float(drop_name(s.labels), native_quantile(q, h)));
            }
            SampleValue::Float(f) => {
                let Some(le) = label(&s.labels, "le").and_then(|l| l.parse::<f64>().ok()) else {
                    continue;
                };
                let mut key = drop_name(s.labels.clone());
                key.retain(|(k, _)| k != "le");
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, b)) => b.push((le, *f)),
                    None => groups.push((key, vec![(le, *f)])),
                }
            }
        }
    }
    for (labels, buckets) in groups {
        out.push(Sample::float(labels, bucket_quantile(q, buckets)));
    }
    out
}

/// The quantile of cumulative classic buckets `(upper bound, count)`,
/// interpolating linearly within the bucket the rank falls in.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are added up; counts made monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    for i in 1..merged.len() {
        if merged[i].1 < merged[i - 1].1 {
            merged[i].1 = merged[i - 1].1;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let total = merged[merged.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    let b = merged.partition_point(|(_, c)| *c < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The quantile of a native histogram: linear interpolation in the zero
/// bucket, exponential interpolation in the others.
fn native_quantile(q: f64, h: &NativeHistogram) -> f64 {
    if q.is_nan() || h.count == 0.0 {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Buckets as (lower, upper, count) in ascending order.
    let mut buckets: Vec<(f64, f64, f64)> =
        bucket_bounds(h.schema, &h.negative_spans, &h.negative_buckets)
            .into_iter()
            .rev()
            .map(|(lo, hi, c)| (-hi, -lo, c))
            .collect();
    if h.zero_count > 0.0 {
        buckets.push((-h.zero_threshold, h.zero_threshold, h.zero_count));
    }
    buckets.extend(bucket_bounds(
        h.schema,
        &h.positive_spans,
        &h.positive_buckets,
    ));
    let rank = q * h.count;
    let mut seen = 0.0;
    let mut found = None;
    for b in buckets.iter().filter(|b| b.2 > 0.0) {
        seen += b.2;
        found = Some(*b);
        if seen >= rank {
            break;
        }
    }
    let Some((mut lo, mut hi, c)) = found else {
        return f64::NAN;
    };
    let fraction = (rank - (seen - c)) / c;
    if lo < 0.0 && hi > 0.0 {
        if h.negative_buckets.iter().all(|c| *c == 0.0) {
            lo = 0.0;
        }
        if h.positive_buckets.iter().all(|c| *c == 0.0) {
            hi = 0.0;
        }
        return lo + (hi - lo) * fraction;
    }
    let (log_lo, log_hi) = (lo.abs().log2(), hi.abs().log2());
    if lo > 0.0 {
        (log_lo + (log_hi - log_lo) * fraction).exp2()
    } else {
        -(log_hi + (log_lo - log_hi) * (1.0 - fraction)).exp2()
    }
}

/// A calendar field of a Unix time in seconds, in UTC.
fn date_part(name: &str, secs: f64) -> f64 {
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp(secs.floor() as i64) else {
        return f64::NAN;
    };
    f64::from(match name {
        "minute" => u16::from(dt.minute()),
        "hour" => u16::from(dt.hour()),
        "day_of_week" => u16::from(dt.weekday().number_days_from_sunday()),
        "day_of_month" => u16::from(dt.day()),
        "day_of_year" => dt.ordinal(),
        "days_in_month" => u16::from(dt.month().length(dt.year())),
        "month" => u16::from(u8::from(dt.month())),
        _ => return f64::from(dt.year()),
    })
}
