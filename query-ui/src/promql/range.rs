//! Series-at-a-time evaluation of range queries, for the expressions
//! dashboards use most: selectors, range functions over a selector,
//! arithmetic and comparisons with scalars or one-to-one vector matching,
//! the common aggregations, and `histogram_quantile` over classic buckets.
//!
//! The step-by-step evaluator rebuilds every series' labels and copies its
//! window at each step; here each series is walked once across all steps
//! (window bounds only move forward), labels and match groups are computed
//! once per series, and a step's value is a slot in a column. With a
//! source to scan (`Evaluator::stream`), selectors are read a series at a
//! time for the whole range, and an aggregation folds each series' column
//! into its group as it comes. The results are the step evaluator's (a test
//! runs both over the whole conformance suite; sums may add in another
//! order). Anything outside this subset — native histograms, subqueries,
//! set operators, `group_left`, functions not listed — returns `None` and
//! the caller falls back to the step evaluator.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use periscope_proto::{Labels, SampleValue, is_stale_nan, label};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, VectorMatchCardinality, VectorSelector,
};

use super::QueryError;
use super::binary::{float_op, is_comparison, signature};
use super::eval::{Evaluator, drop_name, duration_ms, key, matcher_groups};
use super::functions::{
    bucket_quantile, counter_rate_window, counter_resets, keeps_name, range_function_floats,
};
use super::source::Series;

use crate::sync::MutexRecover;

/// One series over the steps: `vals[i]` is its value at step `i` when
/// `has[i]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Column {
    pub labels: Labels,
    pub vals: Vec<f64>,
    pub has: Vec<bool>,
}

impl Column {
    fn empty(labels: Labels, n: usize) -> Self {
        Column {
            labels,
            vals: vec![0.0; n],
            has: vec![false; n],
        }
    }

    fn any(&self) -> bool {
        self.has.iter().any(|h| *h)
    }
}

/// What computing a leaf's column reuses from one series to the next.
#[derive(Default)]
struct Scratch {
    col: Column,
    /// The samples without staleness markers, when there are some.
    kept: Vec<(i64, f64)>,
    /// Where the series' counter resets are.
    resets: Vec<usize>,
}

/// A range-evaluated expression.
pub(crate) enum Ranged {
    Scalar(Vec<f64>),
    Vector(Vec<Column>),
}

type Out = Option<Result<Ranged, QueryError>>;

/// Unwraps an `Option<Result<..>>` inside a function returning [`Out`].
macro_rules! tryo {
    ($e:expr) => {
        match $e {
            None => return None,
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(v)) => v,
        }
    };
}

/// One series' samples as float points into `pts` (converted a series at a
/// time into one reused buffer), staleness markers left out when asked;
/// false when it holds a histogram (left to the step evaluator).
fn float_points(s: &Series, drop_stale: bool, pts: &mut Vec<(i64, f64)>) -> bool {
    pts.clear();
    for (t, v) in &s.samples {
        match v {
            SampleValue::Float(f) if drop_stale && is_stale_nan(*f) => {}
            SampleValue::Float(f) => pts.push((*t, *f)),
            SampleValue::Histogram(_) => return false,
        }
    }
    true
}

impl Evaluator<'_> {
    /// The expression at every step, or `None` when it is outside the subset
    /// evaluated here.
    pub(crate) fn eval_range(&self, expr: &Expr, steps: &[i64]) -> Out {
        if let Err(e) = self.check_deadline() {
            return Some(Err(e));
        }
        match expr {
            Expr::NumberLiteral(n) => Some(Ok(Ranged::Scalar(vec![n.val; steps.len()]))),
            Expr::Paren(p) => self.eval_range(&p.expr, steps),
            Expr::Unary(u) => match tryo!(self.eval_range(&u.expr, steps)) {
                Ranged::Scalar(v) => Some(Ok(Ranged::Scalar(v.into_iter().map(|x| -x).collect()))),
                Ranged::Vector(cols) => Some(Ok(Ranged::Vector(
                    cols.into_iter()
                        .map(|mut c| {
                            c.labels = drop_name(c.labels);
                            c.vals.iter_mut().for_each(|v| *v = -*v);
                            c
                        })
                        .collect(),
                ))),
            },
            Expr::Call(c) if c.func.name == "histogram_quantile" => {
                self.range_histogram_quantile(c, steps)
            }
            Expr::VectorSelector(_) | Expr::Call(_) => self.leaf_vector(leaf(expr)?, steps),
            Expr::Aggregate(a) => self.range_aggregate(a, steps),
            Expr::Binary(b) => self.range_binary(b, steps),
            _ => None,
        }
    }

    /// A selector's series, for walking as floats (see [`float_points`]).
    fn float_series(&self, vs: &VectorSelector) -> &[Series] {
        self.data.get(&key(vs)).map_or(&[][..], |v| v.as_slice())
    }

    /// A leaf's values at every step from one series' samples (staleness
    /// markers included), into `sc.col`; whether it has any. `Err` when
    /// that is left to the step evaluator.
    fn leaf_column(
        &self,
        leaf: Leaf<'_>,
        labels: &Labels,
        pts: &[(i64, f64)],
        steps: &[i64],
        sc: &mut Scratch,
    ) -> Result<bool, ()> {
        let col = &mut sc.col;
        col.vals.resize(steps.len(), 0.0);
        col.has.clear();
        col.has.resize(steps.len(), false);
        match leaf {
            Leaf::Instant(vs) => {
                col.labels = labels.clone();
                let lookback = self.opts.lookback_ms;
                let mut p = 0;
                for (i, t) in steps.iter().enumerate() {
                    let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), *t);
                    if p > 0 && pts[p - 1].0 > rt {
                        // `@` and `offset` keep reference times in step
                        // order; anything else is left to the step evaluator.
                        return Err(());
                    }
                    while p < pts.len() && pts[p].0 <= rt {
                        p += 1;
                    }
                    if p == 0 {
                        continue;
                    }
                    let (ts, v) = pts[p - 1];
                    if ts <= rt - lookback || is_stale_nan(v) {
                        continue;
                    }
                    col.vals[i] = v;
                    col.has[i] = true;
                }
            }
            Leaf::Range { func, vs, range } => {
                // Range windows never include staleness markers.
                let pts = if pts.iter().any(|(_, v)| is_stale_nan(*v)) {
                    sc.kept.clear();
                    sc.kept
                        .extend(pts.iter().filter(|(_, v)| !is_stale_nan(*v)).copied());
                    &sc.kept[..]
                } else {
                    pts
                };
                col.labels = if keeps_name(func) {
                    labels.clone()
                } else {
                    drop_name(labels.clone())
                };
                // `rate` and `increase` add the value before each counter
                // reset in the window: found once for the series.
                let counter = matches!(func, "rate" | "increase");
                if counter {
                    counter_resets(pts, &mut sc.resets);
                }
                let (mut lo, mut hi) = (0, 0);
                let mut last_rt = i64::MIN;
                for (i, t) in steps.iter().enumerate() {
                    let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), *t);
                    if rt < last_rt {
                        return Err(());
                    }
                    last_rt = rt;
                    while lo < pts.len() && pts[lo].0 <= rt - range {
                        lo += 1;
                    }
                    hi = hi.max(lo);
                    while hi < pts.len() && pts[hi].0 <= rt {
                        hi += 1;
                    }
                    if lo == hi {
                        continue;
                    }
                    let v = if counter {
                        counter_rate_window(
                            pts,
                            (lo, hi),
                            &sc.resets,
                            rt - range,
                            rt,
                            func == "rate",
                        )
                    } else {
                        range_function_floats(func, &pts[lo..hi], f64::NAN, rt - range, rt)
                    };
                    if let Some(v) = v {
                        col.vals[i] = v;
                        col.has[i] = true;
                    }
                }
            }
        }
        Ok(col.any())
    }

    /// How many threads a scan may read on.
    fn parts(&self) -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, self.opts.range_threads.max(1))
    }

    /// Computes a leaf's column for each of its series and hands it to `f`
    /// with the part it was read in (below [`Evaluator::parts`]): from the
    /// series loaded up front, or from a scan of the source, which holds
    /// one series per thread at a time.
    fn leaf_columns(
        &self,
        leaf: Leaf<'_>,
        steps: &[i64],
        f: &(dyn Fn(usize, &Column) -> Result<(), QueryError> + Sync),
    ) -> Option<Result<(), QueryError>> {
        let vs = leaf.vs();
        let Some(src) = self.stream else {
            let mut pts = Vec::new();
            let mut sc = Scratch::default();
            for s in self.float_series(vs) {
                if !float_points(s, false, &mut pts) {
                    return None;
                }
                match self.leaf_column(leaf, &s.labels, &pts, steps, &mut sc) {
                    Err(()) => return None,
                    Ok(true) => {
                        if let Err(e) = f(0, &sc.col) {
                            return Some(Err(e));
                        }
                    }
                    Ok(false) => {}
                }
            }
            return Some(Ok(()));
        };
        let groups = matcher_groups(vs);
        let [matchers] = groups.as_slice() else {
            return None;
        };
        let (first, last) = (*steps.first()?, *steps.last()?);
        let reach = match leaf {
            Leaf::Instant(_) => self.opts.lookback_ms,
            Leaf::Range { range, .. } => range,
        };
        let lo = self
            .ref_time(vs.at.as_ref(), vs.offset.as_ref(), first)
            .saturating_sub(reach);
        let hi = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), last);
        let failed: Mutex<Option<QueryError>> = Mutex::new(None);
        // Counted as the scan reads, so that it stops at the limits.
        let (read_series, read_samples) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let unsupported = AtomicBool::new(false);
        let fail = |e: QueryError| {
            *failed.lock_or_recover() = Some(e);
            String::new()
        };
        let parts = self.parts();
        let scratch: Vec<Mutex<Scratch>> = (0..parts).map(|_| Mutex::default()).collect();
        let visit = |part: usize, labels: &Labels, pts: &[(i64, f64)]| -> Result<(), String> {
            self.check_deadline().map_err(fail)?;
            let series = read_series.fetch_add(1, Ordering::Relaxed) + 1;
            self.check_series(series).map_err(fail)?;
            let samples = read_samples.fetch_add(pts.len(), Ordering::Relaxed) + pts.len();
            self.check_samples(samples).map_err(fail)?;
            let mut sc = scratch[part].lock_or_recover();
            match self.leaf_column(leaf, labels, pts, steps, &mut sc) {
                Err(()) => {
                    unsupported.store(true, Ordering::Relaxed);
                    Err(String::new())
                }
                Ok(true) => f(part, &sc.col).map_err(fail),
                Ok(false) => Ok(()),
            }
        };
        match src.scan_floats(matchers, lo, hi, parts, &visit) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(_) if unsupported.load(Ordering::Relaxed) => None,
            Err(msg) => Some(Err(failed.lock_or_recover().take().unwrap_or_else(|| {
                QueryError::execution(format!("failed to select series: {msg}"))
            }))),
        }
    }

    /// A leaf's columns, all of them.
    fn leaf_vector(&self, leaf: Leaf<'_>, steps: &[i64]) -> Out {
        let parts: Vec<Mutex<Vec<Column>>> = (0..self.parts()).map(|_| Mutex::default()).collect();
        let points = AtomicUsize::new(0);
        tryo!(self.leaf_columns(leaf, steps, &|part, c| {
            let n = points.fetch_add(steps.len(), Ordering::Relaxed) + steps.len();
            self.check_samples(n)?;
            parts[part].lock_or_recover().push(c.clone());
            Ok(())
        }));
        Some(Ok(Ranged::Vector(
            parts
                .into_iter()
                .flat_map(|p| p.into_inner().unwrap_or_else(|p| p.into_inner()))
                .collect(),
        )))
    }

    /// `sum`, `avg`, `min`, `max`, `count` or `group` of a leaf, each
    /// series' column folded into its group as it comes (per part, then the
    /// parts together), so that the leaf's columns are never all held.
    fn fold_aggregate(
        &self,
        op: &str,
        modifier: Option<&LabelModifier>,
        leaf: Leaf<'_>,
        steps: &[i64],
    ) -> Out {
        let n = steps.len();
        let fold = Fold::of(op);
        let parts: Vec<Mutex<Groups>> = (0..self.parts()).map(|_| Mutex::default()).collect();
        tryo!(self.leaf_columns(leaf, steps, &|part, c| {
            let mut g = parts[part].lock_or_recover();
            let acc = g.group(group_labels(&c.labels, modifier), n);
            for i in 0..n {
                if c.has[i] {
                    fold.combine(&mut acc.vals[i], &mut acc.count[i], c.vals[i], 1);
                }
            }
            Ok(())
        }));
        let mut all = Groups::default();
        for p in parts {
            let p = p.into_inner().unwrap_or_else(|p| p.into_inner());
            for (labels, g) in p.groups {
                let acc = all.group(labels, n);
                for i in 0..n {
                    fold.combine(&mut acc.vals[i], &mut acc.count[i], g.vals[i], g.count[i]);
                }
            }
        }
        let out = all
            .groups
            .into_iter()
            .filter_map(|(labels, g)| {
                let mut col = Column::empty(labels, n);
                for i in 0..n {
                    if g.count[i] == 0 {
                        continue;
                    }
                    col.vals[i] = match op {
                        "avg" => g.vals[i] / f64::from(g.count[i]),
                        "count" => f64::from(g.count[i]),
                        "group" => 1.0,
                        _ => g.vals[i],
                    };
                    col.has[i] = true;
                }
                col.any().then_some(col)
            })
            .collect();
        Some(Ok(Ranged::Vector(out)))
    }

    fn range_aggregate(&self, a: &AggregateExpr, steps: &[i64]) -> Out {
        let (op, k) = aggregate_op(a)?;
        let topk = matches!(op.as_str(), "topk" | "bottomk");
        if !topk && let Some(leaf) = leaf(&a.expr) {
            return self.fold_aggregate(&op, a.modifier.as_ref(), leaf, steps);
        }
        let Ranged::Vector(input) = tryo!(self.eval_range(&a.expr, steps)) else {
            return None;
        };
        let modifier = a.modifier.as_ref();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
        for (i, c) in input.iter().enumerate() {
            let g = group_labels(&c.labels, modifier);
            let gi = *index.entry(g.clone()).or_insert_with(|| {
                groups.push((g, Vec::new()));
                groups.len() - 1
            });
            groups[gi].1.push(i);
        }
        if topk {
            if k.is_nan() {
                return Some(Err(QueryError::execution("parameter value is NaN")));
            }
            if k < 1.0 {
                return Some(Ok(Ranged::Vector(Vec::new())));
            }
            let k = k.min(1e9) as usize;
            let top = op == "topk";
            let mut out: Vec<Column> = input
                .iter()
                .map(|c| Column::empty(c.labels.clone(), steps.len()))
                .collect();
            let mut members: Vec<(f64, usize)> = Vec::new();
            for step in 0..steps.len() {
                for (_, m) in &groups {
                    members.clear();
                    members.extend(
                        m.iter()
                            .filter(|i| input[**i].has[step])
                            .map(|i| (input[*i].vals[step], *i)),
                    );
                    // Stable, NaN last: the order the step evaluator keeps.
                    members.sort_by(|(x, _), (y, _)| match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => y.total_cmp(x),
                        _ => x.total_cmp(y),
                    });
                    for (v, i) in members.iter().take(k) {
                        out[*i].vals[step] = *v;
                        out[*i].has[step] = true;
                    }
                }
            }
            out.retain(Column::any);
            return Some(Ok(Ranged::Vector(out)));
        }
        let mut out = Vec::with_capacity(groups.len());
        let mut vals: Vec<f64> = Vec::new();
        for (labels, m) in groups {
            let mut col = Column::empty(labels, steps.len());
            for step in 0..steps.len() {
                vals.clear();
                vals.extend(
                    m.iter()
                        .filter(|i| input[**i].has[step])
                        .map(|i| input[*i].vals[step]),
                );
                if vals.is_empty() {
                    continue;
                }
                let n = vals.len() as f64;
                col.vals[step] = match op.as_str() {
                    "sum" => vals.iter().sum(),
                    "avg" => vals.iter().sum::<f64>() / n,
                    "min" => super::functions::min_of(vals.iter().copied()),
                    "max" => super::functions::max_of(vals.iter().copied()),
                    "count" => n,
                    _ => 1.0,
                };
                col.has[step] = true;
            }
            if col.any() {
                out.push(col);
            }
        }
        Some(Ok(Ranged::Vector(out)))
    }

    /// `histogram_quantile` over classic buckets: the bucket columns grouped
    /// once by their labels without `le`, then each step's quantile from
    /// the buckets with a value at that step, as the step evaluator does.
    fn range_histogram_quantile(&self, c: &Call, steps: &[i64]) -> Out {
        let [phi, buckets] = c.args.args.as_slice() else {
            return None;
        };
        let Ranged::Scalar(phi) = tryo!(self.eval_range(phi, steps)) else {
            return None;
        };
        let Ranged::Vector(cols) = tryo!(self.eval_range(buckets, steps)) else {
            return None;
        };
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
        for (i, col) in cols.iter().enumerate() {
            let Some(le) = label(&col.labels, "le").and_then(|l| l.parse::<f64>().ok()) else {
                continue;
            };
            let mut key = drop_name(col.labels.clone());
            key.retain(|(k, _)| k != "le");
            let g = *index.entry(key.clone()).or_insert_with(|| {
                groups.push((key, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((le, i));
        }
        let mut out = Vec::with_capacity(groups.len());
        for (labels, members) in groups {
            let mut col = Column::empty(labels, steps.len());
            for (step, q) in phi.iter().enumerate() {
                let present: Vec<(f64, f64)> = members
                    .iter()
                    .filter(|(_, i)| cols[*i].has[step])
                    .map(|(le, i)| (*le, cols[*i].vals[step]))
                    .collect();
                if present.is_empty() {
                    continue;
                }
                col.vals[step] = bucket_quantile(*q, present);
                col.has[step] = true;
            }
            if col.any() {
                out.push(col);
            }
        }
        Some(Ok(Ranged::Vector(out)))
    }

    fn range_binary(&self, b: &BinaryExpr, steps: &[i64]) -> Out {
        if !binary_supported(b) {
            return None;
        }
        let op = b.op.to_string().to_lowercase();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let cmp = is_comparison(&op);
        let lhs = tryo!(self.eval_range(&b.lhs, steps));
        let rhs = tryo!(self.eval_range(&b.rhs, steps));
        let apply = |x: f64, y: f64, vector_value: Option<f64>| -> Option<f64> {
            let (mut value, keep) = float_op(&op, x, y)?;
            if cmp && let Some(f) = vector_value {
                value = f;
            }
            if return_bool {
                Some(f64::from(u8::from(keep)))
            } else if keep {
                Some(value)
            } else {
                None
            }
        };
        match (lhs, rhs) {
            (Ranged::Scalar(x), Ranged::Scalar(y)) => Some(Ok(Ranged::Scalar(
                x.iter()
                    .zip(&y)
                    .map(|(a, b)| {
                        let (v, keep) = float_op(&op, *a, *b).unwrap_or((f64::NAN, false));
                        if cmp { f64::from(u8::from(keep)) } else { v }
                    })
                    .collect(),
            ))),
            (Ranged::Vector(v), Ranged::Scalar(s)) | (Ranged::Scalar(s), Ranged::Vector(v)) => {
                let scalar_left = !returns_vector(&b.lhs);
                let mut out = Vec::with_capacity(v.len());
                for c in v {
                    let labels = if !cmp || return_bool {
                        drop_name(c.labels.clone())
                    } else {
                        c.labels.clone()
                    };
                    let mut col = Column::empty(labels, steps.len());
                    for (i, sv) in s.iter().enumerate() {
                        if !c.has[i] {
                            continue;
                        }
                        let f = c.vals[i];
                        let (x, y) = if scalar_left { (*sv, f) } else { (f, *sv) };
                        if let Some(r) = apply(x, y, Some(f)) {
                            col.vals[i] = r;
                            col.has[i] = true;
                        }
                    }
                    if col.any() {
                        out.push(col);
                    }
                }
                Some(Ok(Ranged::Vector(out)))
            }
            (Ranged::Vector(l), Ranged::Vector(r)) => {
                let (card, matching) = match &b.modifier {
                    Some(m) => (m.card.clone(), m.matching.clone()),
                    None => (VectorMatchCardinality::OneToOne, None),
                };
                if !matches!(card, VectorMatchCardinality::OneToOne) {
                    return None;
                }
                let matching = matching.as_ref();
                // Duplicate match groups on either side: the step evaluator
                // decides, step by step, whether that is an error.
                let mut right: HashMap<Labels, usize> = HashMap::new();
                for (i, c) in r.iter().enumerate() {
                    if right.insert(signature(&c.labels, matching), i).is_some() {
                        return None;
                    }
                }
                let mut seen: HashMap<Labels, ()> = HashMap::new();
                let drop = !cmp || return_bool;
                let mut out = Vec::new();
                for c in &l {
                    let sig = signature(&c.labels, matching);
                    let Some(&ri) = right.get(&sig) else { continue };
                    if seen.insert(sig, ()).is_some() {
                        return None;
                    }
                    let rc = &r[ri];
                    let mut labels = if drop {
                        drop_name(c.labels.clone())
                    } else {
                        c.labels.clone()
                    };
                    match matching {
                        Some(LabelModifier::Include(on)) => {
                            labels.retain(|(k, _)| on.labels.iter().any(|n| n == k));
                        }
                        Some(LabelModifier::Exclude(ign)) => {
                            labels.retain(|(k, _)| !ign.labels.iter().any(|n| n == k));
                        }
                        None => {}
                    }
                    let mut col = Column::empty(labels, steps.len());
                    for i in 0..steps.len() {
                        if !(c.has[i] && rc.has[i]) {
                            continue;
                        }
                        let (mut value, keep) = float_op(&op, c.vals[i], rc.vals[i])?;
                        if return_bool {
                            value = f64::from(u8::from(keep));
                        } else if !keep {
                            continue;
                        }
                        col.vals[i] = value;
                        col.has[i] = true;
                    }
                    if col.any() {
                        out.push(col);
                    }
                }
                Some(Ok(Ranged::Vector(out)))
            }
        }
    }
}

/// A leaf of the expressions evaluated here: the series it reads, and what
/// it computes from each one at every step.
#[derive(Clone, Copy)]
enum Leaf<'e> {
    /// An instant selector: the latest sample within the lookback.
    Instant(&'e VectorSelector),
    /// A range function over a matrix selector.
    Range {
        func: &'static str,
        vs: &'e VectorSelector,
        range: i64,
    },
}

impl Leaf<'_> {
    fn vs(&self) -> &VectorSelector {
        match self {
            Leaf::Instant(vs) | Leaf::Range { vs, .. } => vs,
        }
    }
}

/// The range functions evaluated here.
const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "resets",
    "changes",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "last_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "present_over_time",
];

fn leaf(expr: &Expr) -> Option<Leaf<'_>> {
    match expr {
        Expr::VectorSelector(vs) => Some(Leaf::Instant(vs)),
        Expr::Call(c) if RANGE_FUNCTIONS.contains(&c.func.name) => {
            match c.args.args.first().map(|a| a.as_ref()) {
                Some(Expr::MatrixSelector(ms)) => Some(Leaf::Range {
                    func: c.func.name,
                    vs: &ms.vs,
                    range: duration_ms(&ms.range),
                }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The aggregations evaluated here: the operator, and `k` of `topk` and
/// `bottomk` (NaN for the others).
fn aggregate_op(a: &AggregateExpr) -> Option<(String, f64)> {
    let op = a.op.to_string().to_lowercase();
    match op.as_str() {
        "topk" | "bottomk" => match a.param.as_deref() {
            Some(Expr::NumberLiteral(n)) => Some((op, n.val)),
            _ => None,
        },
        "sum" | "avg" | "min" | "max" | "count" | "group" => Some((op, f64::NAN)),
        _ => None,
    }
}

/// Arithmetic and comparisons, with one-to-one matching between vectors.
fn binary_supported(b: &BinaryExpr) -> bool {
    let op = b.op.to_string().to_lowercase();
    !matches!(op.as_str(), "and" | "or" | "unless")
        && float_op(&op, 0.0, 0.0).is_some()
        && b.modifier
            .as_ref()
            .is_none_or(|m| matches!(m.card, VectorMatchCardinality::OneToOne))
}

/// Whether the expression is one `range_query` can evaluate here reading
/// its selectors a series at a time (`SeriesSource::scan_floats`). Some
/// data still sends it back to the chunked evaluation: histogram samples,
/// or vectors with repeated match groups.
pub(crate) fn streams(expr: &Expr) -> bool {
    match expr {
        Expr::NumberLiteral(_) => true,
        Expr::Paren(p) => streams(&p.expr),
        Expr::Unary(u) => streams(&u.expr),
        Expr::Call(c) if c.func.name == "histogram_quantile" => {
            c.args.args.len() == 2 && c.args.args.iter().all(|a| streams(a))
        }
        Expr::VectorSelector(_) | Expr::Call(_) => {
            leaf(expr).is_some_and(|l| l.vs().matchers.or_matchers.is_empty())
        }
        Expr::Aggregate(a) => aggregate_op(a).is_some() && streams(&a.expr),
        Expr::Binary(b) => binary_supported(b) && streams(&b.lhs) && streams(&b.rhs),
        _ => false,
    }
}

/// Per group of an aggregation: a running value and how many series have
/// a value, at each step.
#[derive(Default)]
struct Groups {
    index: HashMap<Labels, usize>,
    groups: Vec<(Labels, Acc)>,
}

struct Acc {
    vals: Vec<f64>,
    count: Vec<u32>,
}

impl Groups {
    fn group(&mut self, labels: Labels, steps: usize) -> &mut Acc {
        let i = match self.index.get(&labels) {
            Some(i) => *i,
            None => {
                self.index.insert(labels.clone(), self.groups.len());
                self.groups.push((
                    labels,
                    Acc {
                        vals: vec![0.0; steps],
                        count: vec![0; steps],
                    },
                ));
                self.groups.len() - 1
            }
        };
        &mut self.groups[i].1
    }
}

/// How an aggregation folds a value into its group's running value.
#[derive(Clone, Copy)]
enum Fold {
    /// `sum` and `avg`.
    Sum,
    Min,
    Max,
    /// `count` and `group`: only the count matters.
    Count,
}

impl Fold {
    fn of(op: &str) -> Fold {
        match op {
            "sum" | "avg" => Fold::Sum,
            "min" => Fold::Min,
            "max" => Fold::Max,
            _ => Fold::Count,
        }
    }

    /// Adds `n` values folded into `v` to a running value: the first value
    /// as is, then sums, or the smaller or larger, NaN only while every
    /// value is NaN (`min`, `max`), as the step evaluator does.
    fn combine(self, acc: &mut f64, count: &mut u32, v: f64, n: u32) {
        if n == 0 {
            return;
        }
        if *count == 0 {
            *acc = v;
        } else {
            match self {
                Fold::Sum => *acc += v,
                Fold::Min if acc.is_nan() || v < *acc => *acc = v,
                Fold::Max if acc.is_nan() || v > *acc => *acc = v,
                _ => {}
            }
        }
        *count += n;
    }
}

/// Whether an expression evaluates to an instant vector (rather than a
/// scalar), from its syntax.
fn returns_vector(e: &Expr) -> bool {
    matches!(
        e.value_type(),
        promql_parser::parser::value::ValueType::Vector
    )
}

fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    super::aggregate::group_labels(labels, modifier)
}
