//! Aggregation operators (`sum`, `avg`, `topk`, `limitk`, ...) with `by` /
//! `without`. `sum` and `avg` add native histograms bucket-wise, `count` and
//! `group` count them, the others ignore them, as in Prometheus.

use std::collections::HashMap;

use periscope_proto::{Labels, NAME_LABEL, NativeHistogram, SampleValue};
use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::QueryError;
use super::eval::{Evaluator, Sample, Value, set_label};
use super::functions::quantile;
use super::histogram::sparse;
use super::value::float_string;

/// The labels of an element's group.
pub(crate) fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => labels
            .iter()
            .filter(|(k, _)| by.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(without)) => labels
            .iter()
            .filter(|(k, _)| k != NAME_LABEL && !without.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        None => Labels::new(),
    }
}

/// The sum (or mean) of histogram samples, at their coarsest schema.
fn sum_histograms(members: &[Sample], mean: bool) -> SampleValue {
    let mut hs = members.iter().filter_map(|s| match &s.v {
        SampleValue::Histogram(h) => Some(sparse(h)),
        SampleValue::Float(_) => None,
    });
    let mut sum = hs
        .next()
        .unwrap_or_else(|| sparse(&NativeHistogram::default()));
    for h in hs {
        sum.add_scaled(&h, 1.0);
    }
    if mean {
        sum.divide(members.len() as f64);
    }
    SampleValue::Histogram(Box::new(sum.to_native()))
}

/// FNV-1a over the label pairs: a hash stable across runs and versions.
fn labels_hash(labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Evaluator<'_> {
    pub(crate) fn eval_aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
        let op = a.op.to_string().to_lowercase();
        let modifier = a.modifier.as_ref();
        let input = self.eval_vector(&a.expr, t)?;

        // Groups in order of first appearance.
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<Sample>)> = Vec::new();
        let count_values_label = if op == "count_values" {
            let Some(p) = &a.param else {
                return Err(QueryError::bad_data("count_values needs a label name"));
            };
            Some(self.eval_string(p, t)?)
        } else {
            None
        };
        for s in input {
            let mut g = group_labels(&s.labels, modifier);
            if let Some(name) = &count_values_label {
                let Some(f) = s.as_float() else { continue };
                set_label(&mut g, name, &float_string(f));
            }
            let i = *index.entry(g.clone()).or_insert_with(|| {
                groups.push((g, Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(s);
        }

        let mut out = Vec::new();
        match op.as_str() {
            "topk" | "bottomk" => {
                let Some(k) = self.k_param(a, t)? else {
                    return Ok(Value::Vector(out));
                };
                let top = op == "topk";
                for (_, members) in groups {
                    let mut members: Vec<(f64, Sample)> = members
                        .into_iter()
                        .filter_map(|s| Some((s.as_float()?, s)))
                        .collect();
                    // NaN always sorts last.
                    members.sort_by(|(x, _), (y, _)| match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => y.total_cmp(x),
                        _ => x.total_cmp(y),
                    });
                    out.extend(members.into_iter().take(k).map(|(_, s)| s));
                }
            }
            "limitk" => {
                let Some(k) = self.k_param(a, t)? else {
                    return Ok(Value::Vector(out));
                };
                for (_, members) in groups {
                    out.extend(members.into_iter().take(k));
                }
            }
            "limit_ratio" => {
                let r = self.param_scalar(a, t)?;
                if r.is_nan() {
                    return Err(QueryError::execution("ratio value is NaN"));
                }
                let r = r.clamp(-1.0, 1.0);
                for (_, members) in groups {
                    out.extend(members.into_iter().filter(|s| {
                        // A series' place in [0, 1) is fixed by its labels, so
                        // `limit_ratio(r, v)` and `limit_ratio(r - 1, v)`
                        // select complementary series at every step.
                        let offset = labels_hash(&s.labels) as f64 / u64::MAX as f64;
                        (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
                    }));
                }
            }
            _ => {
                let q = if op == "quantile" {
                    Some(self.param_scalar(a, t)?)
                } else {
                    None
                };
                for (labels, members) in groups {
                    let vals: Vec<f64> = members.iter().filter_map(Sample::as_float).collect();
                    if vals.len() < members.len() {
                        // Histograms are counted and added up (`sum`, `avg`);
                        // the other aggregations ignore them.
                        match op.as_str() {
                            "count" | "group" => {
                                let v = if op == "count" {
                                    members.len() as f64
                                } else {
                                    1.0
                                };
                                out.push(Sample::float(labels, v));
                                continue;
                            }
                            // Floats and histograms cannot be added together.
                            "sum" | "avg" if !vals.is_empty() => continue,
                            "sum" | "avg" => {
                                out.push(Sample {
                                    labels,
                                    v: sum_histograms(&members, op == "avg"),
                                });
                                continue;
                            }
                            _ => {}
                        }
                    }
                    if vals.is_empty() {
                        continue;
                    }
                    let n = vals.len() as f64;
                    let mean = vals.iter().sum::<f64>() / n;
                    let v = match op.as_str() {
                        "sum" => vals.iter().sum(),
                        "avg" => mean,
                        // NaN only when every value is NaN.
                        "min" => super::functions::min_of(vals.iter().copied()),
                        "max" => super::functions::max_of(vals.iter().copied()),
                        "count" | "count_values" => n,
                        "group" => 1.0,
                        "stdvar" => vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n,
                        "stddev" => {
                            (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
                        }
                        "quantile" => quantile(q.unwrap_or(f64::NAN), vals),
                        other => {
                            return Err(QueryError::bad_data(format!(
                                "aggregation {other:?} is not supported"
                            )));
                        }
                    };
                    out.push(Sample::float(labels, v));
                }
            }
        }
        Ok(Value::Vector(out))
    }

    /// The `k` of `topk`, `bottomk` and `limitk`; `None` when below 1 (an
    /// empty result), an error when NaN.
    fn k_param(&self, a: &AggregateExpr, t: i64) -> Result<Option<usize>, QueryError> {
        let k = self.param_scalar(a, t)?;
        if k.is_nan() {
            return Err(QueryError::execution("parameter value is NaN"));
        }
        Ok((k >= 1.0).then(|| k.min(1e9) as usize))
    }

    fn param_scalar(&self, a: &AggregateExpr, t: i64) -> Result<f64, QueryError> {
        match &a.param {
            Some(p) => self.eval_scalar(p, t),
            None => Err(QueryError::bad_data("aggregation needs a parameter")),
        }
    }
}
