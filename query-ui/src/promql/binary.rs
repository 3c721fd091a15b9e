//! Binary operators: arithmetic, comparisons (filtering or `bool`), vector
//! matching (`on`, `ignoring`, `group_left`, `group_right`) and the set
//! operators `and`, `or`, `unless`. Native histograms take `*` and `/` by a
//! float, `+` and `-` with each other, and `==` / `!=`; any other operator
//! drops them, as Prometheus does.

use std::collections::{HashMap, HashSet};

use periscope_proto::{Labels, NAME_LABEL, SampleValue, label};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::QueryError;
use super::eval::{Evaluator, Sample, Value, drop_name, set_label};
use super::histogram::{Sparse, sparse};

/// Applies an operator to two floats: the value and whether a comparison
/// holds (always true for arithmetic). Comparisons yield the left value.
pub(crate) fn float_op(op: &str, a: f64, b: f64) -> Option<(f64, bool)> {
    Some(match op {
        "+" => (a + b, true),
        "-" => (a - b, true),
        "*" => (a * b, true),
        "/" => (a / b, true),
        "%" => (a % b, true),
        "^" => (a.powf(b), true),
        "atan2" => (a.atan2(b), true),
        "==" => (a, a == b),
        "!=" => (a, a != b),
        ">" => (a, a > b),
        "<" => (a, a < b),
        ">=" => (a, a >= b),
        "<=" => (a, a <= b),
        _ => return None,
    })
}

/// Applies an operator where a histogram is an operand: a histogram times
/// or divided by a float, a float times a histogram, the sum or difference
/// of two histograms, and `==` / `!=` between histograms (yielding the left
/// one). `None` for every other pairing, which Prometheus drops.
fn histogram_op(op: &str, a: &SampleValue, b: &SampleValue) -> Option<(SampleValue, bool)> {
    let out = |h: Sparse| SampleValue::Histogram(Box::new(h.to_native()));
    match (a, b) {
        (SampleValue::Histogram(h), SampleValue::Float(f))
        | (SampleValue::Float(f), SampleValue::Histogram(h))
            if op == "*" =>
        {
            let mut h = sparse(h);
            h.scale(*f);
            Some((out(h), true))
        }
        (SampleValue::Histogram(h), SampleValue::Float(f)) if op == "/" => {
            let mut h = sparse(h);
            h.divide(*f);
            Some((out(h), true))
        }
        (SampleValue::Histogram(x), SampleValue::Histogram(y)) => match op {
            "+" | "-" => {
                let mut x = sparse(x);
                x.add_scaled(&sparse(y), if op == "+" { 1.0 } else { -1.0 });
                Some((out(x), true))
            }
            "==" | "!=" => {
                let same = sparse(x).same_as(&sparse(y));
                Some((a.clone(), same == (op == "==")))
            }
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn unsupported(op: &str) -> QueryError {
    QueryError::execution(format!(
        "operator {op:?} not supported between these operands"
    ))
}

impl Evaluator<'_> {
    pub(crate) fn eval_binary(&self, b: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
        let op = b.op.to_string().to_lowercase();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                let (v, keep) = float_op(&op, x, y).ok_or_else(|| unsupported(&op))?;
                Ok(Value::Scalar(if is_comparison(&op) {
                    f64::from(u8::from(keep))
                } else {
                    v
                }))
            }
            (Value::Vector(v), Value::Scalar(s)) => vector_scalar(&op, v, s, false, return_bool),
            (Value::Scalar(s), Value::Vector(v)) => vector_scalar(&op, v, s, true, return_bool),
            (Value::Vector(l), Value::Vector(r)) => {
                let (card, matching) = match &b.modifier {
                    Some(m) => (m.card.clone(), m.matching.clone()),
                    None => (VectorMatchCardinality::OneToOne, None),
                };
                match op.as_str() {
                    "and" | "or" | "unless" => {
                        Ok(Value::Vector(set_op(&op, l, r, matching.as_ref())))
                    }
                    _ => vector_vector(&op, l, r, &card, matching.as_ref(), return_bool)
                        .map(Value::Vector),
                }
            }
            _ => Err(unsupported(&op)),
        }
    }
}

fn vector_scalar(
    op: &str,
    v: Vec<Sample>,
    s: f64,
    scalar_left: bool,
    return_bool: bool,
) -> Result<Value, QueryError> {
    let cmp = is_comparison(op);
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let Some(f) = e.as_float() else {
            if cmp {
                continue;
            }
            float_op(op, 0.0, 0.0).ok_or_else(|| unsupported(op))?;
            let sv = SampleValue::Float(s);
            let (x, y) = if scalar_left {
                (&sv, &e.v)
            } else {
                (&e.v, &sv)
            };
            if let Some((v, _)) = histogram_op(op, x, y) {
                out.push(Sample {
                    labels: drop_name(e.labels),
                    v,
                });
            }
            continue;
        };
        let (x, y) = if scalar_left { (s, f) } else { (f, s) };
        let (mut value, keep) = float_op(op, x, y).ok_or_else(|| unsupported(op))?;
        if cmp {
            // A comparison keeps the vector's value, whichever side it is on.
            value = f;
        }
        if return_bool {
            value = f64::from(u8::from(keep));
        } else if !keep {
            continue;
        }
        let labels = if !cmp || return_bool {
            drop_name(e.labels)
        } else {
            e.labels
        };
        out.push(Sample::float(labels, value));
    }
    Ok(Value::Vector(out))
}

/// The labels two series are matched on.
pub(crate) fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels
            .iter()
            .filter(|(k, _)| on.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        Some(LabelModifier::Exclude(ign)) => labels
            .iter()
            .filter(|(k, _)| k != NAME_LABEL && !ign.labels.iter().any(|n| n == k))
            .cloned()
            .collect(),
        None => drop_name(labels.clone()),
    }
}

fn set_op(
    op: &str,
    l: Vec<Sample>,
    r: Vec<Sample>,
    matching: Option<&LabelModifier>,
) -> Vec<Sample> {
    match op {
        "and" => {
            let right: HashSet<Labels> = r.iter().map(|s| signature(&s.labels, matching)).collect();
            l.into_iter()
                .filter(|s| right.contains(&signature(&s.labels, matching)))
                .collect()
        }
        "unless" => {
            let right: HashSet<Labels> = r.iter().map(|s| signature(&s.labels, matching)).collect();
            l.into_iter()
                .filter(|s| !right.contains(&signature(&s.labels, matching)))
                .collect()
        }
        _ => {
            let left: HashSet<Labels> = l.iter().map(|s| signature(&s.labels, matching)).collect();
            let mut out = l;
            out.extend(
                r.into_iter()
                    .filter(|s| !left.contains(&signature(&s.labels, matching))),
            );
            out
        }
    }
}

fn vector_vector(
    op: &str,
    l: Vec<Sample>,
    r: Vec<Sample>,
    card: &VectorMatchCardinality,
    matching: Option<&LabelModifier>,
    return_bool: bool,
) -> Result<Vec<Sample>, QueryError> {
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => &ls.labels,
        _ => &[],
    };
    // `many` is the side whose series may share a match group.
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let mut one_by_sig: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in one.iter().enumerate() {
        let sig = signature(&s.labels, matching);
        if one_by_sig.insert(sig.clone(), i).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side",
                format_labels(&sig)
            )));
        }
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let drop = !is_comparison(op) || return_bool;
    let mut matched: HashSet<Labels> = HashSet::new();
    let mut inserted: HashSet<Labels> = HashSet::new();
    let mut out = Vec::new();
    for ms in many {
        let sig = signature(&ms.labels, matching);
        let Some(&oi) = one_by_sig.get(&sig) else {
            continue;
        };
        let os = &one[oi];
        let (x, y) = if swapped {
            (&os.v, &ms.v)
        } else {
            (&ms.v, &os.v)
        };
        let (value, keep) = match (x, y) {
            (SampleValue::Float(x), SampleValue::Float(y)) => {
                let (v, keep) = float_op(op, *x, *y).ok_or_else(|| unsupported(op))?;
                (SampleValue::Float(v), keep)
            }
            _ => {
                float_op(op, 0.0, 0.0).ok_or_else(|| unsupported(op))?;
                match histogram_op(op, x, y) {
                    Some(r) => r,
                    None => continue,
                }
            }
        };
        let value = if return_bool {
            SampleValue::Float(f64::from(u8::from(keep)))
        } else if !keep {
            continue;
        } else {
            value
        };
        let mut labels = if drop {
            drop_name(ms.labels)
        } else {
            ms.labels
        };
        if one_to_one {
            match matching {
                Some(LabelModifier::Include(on)) => {
                    labels.retain(|(k, _)| on.labels.iter().any(|n| n == k));
                }
                Some(LabelModifier::Exclude(ign)) => {
                    labels.retain(|(k, _)| !ign.labels.iter().any(|n| n == k));
                }
                None => {}
            }
            if !matched.insert(sig) {
                return Err(QueryError::execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                ));
            }
        }
        for name in include {
            let v = label(&os.labels, name).unwrap_or("").to_string();
            set_label(&mut labels, name, &v);
        }
        if !one_to_one && !inserted.insert(labels.clone()) {
            return Err(QueryError::execution(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        out.push(Sample { labels, v: value });
    }
    Ok(out)
}

fn format_labels(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}
