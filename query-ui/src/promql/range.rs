//! Series-at-a-time evaluation of range queries, for the expressions
//! dashboards use most: selectors, range functions over a selector,
//! arithmetic and comparisons with scalars or one-to-one vector matching,
//! and the common aggregations.
//!
//! The step-by-step evaluator rebuilds every series' labels and copies its
//! window at each step; here each series is walked once across all steps
//! (window bounds only move forward), labels and match groups are computed
//! once per series, and a step's value is a slot in a column. The results
//! are the step evaluator's, bit for bit (a test runs both over the whole
//! conformance suite). Anything outside this subset — histograms, subqueries,
//! set operators, `group_left`, functions not listed — returns `None` and
//! the caller falls back to the step evaluator.

use std::collections::HashMap;

use periscope_proto::{Labels, SampleValue, is_stale_nan};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, VectorMatchCardinality, VectorSelector,
};

use super::QueryError;
use super::binary::{float_op, is_comparison, signature};
use super::eval::{Evaluator, drop_name, duration_ms, key};
use super::functions::{keeps_name, range_function_floats};
use super::source::Series;

/// One series over the steps: `vals[i]` is its value at step `i` when
/// `has[i]`.
#[derive(Clone, Debug)]
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
            Expr::VectorSelector(vs) => self.range_instant_selector(vs, steps),
            Expr::Call(c) => self.range_call(c, steps),
            Expr::Aggregate(a) => self.range_aggregate(a, steps),
            Expr::Binary(b) => self.range_binary(b, steps),
            _ => None,
        }
    }

    /// A selector's series, for walking as floats (see [`float_points`]).
    fn float_series(&self, vs: &VectorSelector) -> &[Series] {
        self.data.get(&key(vs)).map_or(&[][..], |v| v.as_slice())
    }

    fn range_instant_selector(&self, vs: &VectorSelector, steps: &[i64]) -> Out {
        let lookback = self.opts.lookback_ms;
        let mut cols = Vec::new();
        let mut pts = Vec::new();
        for s in self.float_series(vs) {
            if !float_points(s, false, &mut pts) {
                return None;
            }
            let labels = &s.labels;
            let mut col = Column::empty(labels.clone(), steps.len());
            let mut p = 0;
            for (i, t) in steps.iter().enumerate() {
                let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), *t);
                if p > 0 && pts[p - 1].0 > rt {
                    // `@` and `offset` keep reference times in step order;
                    // anything else is left to the step evaluator.
                    return None;
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
            if col.any() {
                cols.push(col);
            }
        }
        Some(Ok(Ranged::Vector(cols)))
    }

    fn range_call(&self, c: &Call, steps: &[i64]) -> Out {
        let name = c.func.name;
        if !matches!(
            name,
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
        ) {
            return None;
        }
        let Some(Expr::MatrixSelector(ms)) = c.args.args.first().map(|a| a.as_ref()) else {
            return None;
        };
        let range = duration_ms(&ms.range);
        let vs = &ms.vs;
        let mut cols = Vec::new();
        let mut pts = Vec::new();
        for s in self.float_series(vs) {
            // Range windows never include staleness markers.
            if !float_points(s, true, &mut pts) {
                return None;
            }
            let labels = &s.labels;
            let out_labels = if keeps_name(name) {
                labels.clone()
            } else {
                drop_name(labels.clone())
            };
            let mut col = Column::empty(out_labels, steps.len());
            let (mut lo, mut hi) = (0, 0);
            let mut last_rt = i64::MIN;
            for (i, t) in steps.iter().enumerate() {
                let rt = self.ref_time(vs.at.as_ref(), vs.offset.as_ref(), *t);
                if rt < last_rt {
                    return None;
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
                if let Some(v) = range_function_floats(name, &pts[lo..hi], f64::NAN, rt - range, rt)
                {
                    col.vals[i] = v;
                    col.has[i] = true;
                }
            }
            if col.any() {
                cols.push(col);
            }
        }
        Some(Ok(Ranged::Vector(cols)))
    }

    fn range_aggregate(&self, a: &AggregateExpr, steps: &[i64]) -> Out {
        let op = a.op.to_string().to_lowercase();
        let topk = matches!(op.as_str(), "topk" | "bottomk");
        if !topk
            && !matches!(
                op.as_str(),
                "sum" | "avg" | "min" | "max" | "count" | "group"
            )
        {
            return None;
        }
        let k = if topk {
            match a.param.as_deref() {
                Some(Expr::NumberLiteral(n)) => n.val,
                _ => return None,
            }
        } else {
            f64::NAN
        };
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

    fn range_binary(&self, b: &BinaryExpr, steps: &[i64]) -> Out {
        let op = b.op.to_string().to_lowercase();
        if matches!(op.as_str(), "and" | "or" | "unless") || float_op(&op, 0.0, 0.0).is_none() {
            return None;
        }
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
