//! How deep a PromQL query nests, measured without recursion: on the raw
//! text before the parser runs ([`check_query_text`]), and on the syntax
//! tree after it ([`expr_depth`]), since `1+1+1+…` and `- - -1` nest the
//! tree without a single parenthesis. The parser, the planner and the
//! evaluator all recurse once per level: an unchecked 50,000-level query
//! overflows the stack and aborts the process.

use promql_parser::parser::Expr;

use super::{EngineOptions, QueryError};

/// Refuses a query longer than `opts.max_length` bytes or whose brackets
/// (or runs of unary signs) nest deeper than `opts.max_depth`. Quoted
/// strings and `#` comments are skipped.
pub fn check_query_text(q: &str, opts: &EngineOptions) -> Result<(), QueryError> {
    if q.len() > opts.max_length {
        return Err(QueryError::bad_data(format!(
            "query length {} bytes exceeds the limit {} (--query-max-length)",
            q.len(),
            opts.max_length
        )));
    }
    let depth = text_depth(q);
    if depth > opts.max_depth {
        return Err(depth_error(depth, opts.max_depth));
    }
    check_duration_numbers(q)
}

/// The longest duration written as a plain number of seconds (about 3,000
/// years): `promql-parser` turns such a number into a `Duration` with
/// `Duration::from_secs_f64`, which panics on a value too large, infinite
/// or NaN (`offset 1e30`, `x[Inf]`).
const MAX_DURATION_SECONDS: f64 = 1e11;

/// Refuses a number of seconds in a duration position (inside `[...]`, or
/// after `offset`) that no `Duration` holds. Durations with units
/// (`5m`, `1h30m`) are checked by the parser itself.
fn check_duration_numbers(q: &str) -> Result<(), QueryError> {
    let mut brackets = 0usize;
    let mut after_offset = false;
    let mut chars = q.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some((_, d)) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '`' => for _ in chars.by_ref().take_while(|(_, d)| *d != '`') {},
            '#' => for _ in chars.by_ref().take_while(|(_, d)| *d != '\n') {},
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            c if c.is_alphanumeric() || c == '_' || c == '.' => {
                let mut end = i + c.len_utf8();
                let mut prev = c;
                while let Some(&(j, d)) = chars.peek() {
                    // An exponent's sign belongs to the number: `1e+30`.
                    let sign = (d == '+' || d == '-') && (prev == 'e' || prev == 'E');
                    if !(d.is_alphanumeric() || d == '_' || d == '.' || sign) {
                        break;
                    }
                    end = j + d.len_utf8();
                    prev = d;
                    chars.next();
                }
                let word = &q[i..end];
                if (brackets > 0 || after_offset)
                    && word
                        .parse::<f64>()
                        .is_ok_and(|v| v.is_nan() || v.abs() > MAX_DURATION_SECONDS)
                {
                    return Err(QueryError::bad_data(format!(
                        "duration {word} is out of range: at most {MAX_DURATION_SECONDS:e} seconds"
                    )));
                }
                after_offset = word.eq_ignore_ascii_case("offset");
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() && c != '-' && c != '+' {
            after_offset = false;
        }
    }
    Ok(())
}

fn depth_error(depth: usize, limit: usize) -> QueryError {
    QueryError::bad_data(format!(
        "query nesting depth {depth} exceeds the limit {limit} (--query-max-depth)"
    ))
}

/// An upper bound of the tree's depth read off the text: at each point,
/// the bracket depth plus the operators met so far inside the innermost
/// bracket (a chain `1+1+…` of n operators is a tree n deep, and each sign
/// of `- - -1` is one more level). Label matchers (`{a!="x"}`) are not
/// operators. Bounding this also bounds the parser's work: it walks a
/// chain once per operator, quadratic in its length.
fn text_depth(q: &str) -> usize {
    // Per open bracket: whether it is a `{`, and the operators inside it.
    let mut open: Vec<(bool, usize)> = vec![(false, 0)];
    let mut max = 0usize;
    let mut chars = q.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            if chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() || *n == '_')
            {
                continue;
            }
            let is_op = ["and", "or", "unless", "atan2"]
                .iter()
                .any(|k| word.eq_ignore_ascii_case(k));
            word.clear();
            if !is_op {
                continue;
            }
        }
        let is_op = match c {
            '"' | '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                false
            }
            // Raw strings: no escapes.
            '`' => {
                for _ in chars.by_ref().take_while(|d| *d != '`') {}
                false
            }
            '#' => {
                for _ in chars.by_ref().take_while(|d| *d != '\n') {}
                false
            }
            '(' | '[' | '{' => {
                open.push((c == '{', 0));
                false
            }
            ')' | ']' | '}' => {
                if open.len() > 1 {
                    open.pop();
                }
                false
            }
            '=' | '!' | '<' | '>' => {
                // `==`, `!=`, `<=`, `>=`, `=~`, `!~` are one token.
                if chars.peek().is_some_and(|n| *n == '=' || *n == '~') {
                    chars.next();
                }
                true
            }
            '+' | '-' | '*' | '/' | '%' | '^' => true,
            // The end of an `and`/`or`/`unless`/`atan2` word.
            c if c.is_alphanumeric() || c == '_' => true,
            _ => false,
        };
        // The bottom entry is never popped.
        if let Some((in_braces, ops)) = open.last_mut()
            && is_op
            && !*in_braces
        {
            *ops += 1;
        }
        let here = open.len() - 1 + open.last().map_or(0, |o| o.1);
        max = max.max(here);
    }
    max
}

/// The depth of the syntax tree (a literal is 1), walked with an explicit
/// stack.
pub fn expr_depth(expr: &Expr) -> usize {
    let mut max = 0;
    let mut stack: Vec<(&Expr, usize)> = vec![(expr, 1)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        match e {
            Expr::Aggregate(a) => {
                stack.push((&a.expr, d + 1));
                if let Some(p) = &a.param {
                    stack.push((p, d + 1));
                }
            }
            Expr::Unary(u) => stack.push((&u.expr, d + 1)),
            Expr::Binary(b) => {
                stack.push((&b.lhs, d + 1));
                stack.push((&b.rhs, d + 1));
            }
            Expr::Paren(p) => stack.push((&p.expr, d + 1)),
            Expr::Subquery(s) => stack.push((&s.expr, d + 1)),
            Expr::Call(c) => stack.extend(c.args.args.iter().map(|a| (&**a, d + 1))),
            Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::VectorSelector(_)
            | Expr::MatrixSelector(_)
            | Expr::Extension(_) => {}
        }
    }
    max
}

/// Refuses a parsed query whose tree is deeper than `opts.max_depth`.
pub(crate) fn check_expr_depth(expr: &Expr, opts: &EngineOptions) -> Result<(), QueryError> {
    let depth = expr_depth(expr);
    if depth > opts.max_depth {
        return Err(depth_error(depth, opts.max_depth));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_depth_counts_brackets_and_signs_outside_strings() {
        for (q, want) in [
            ("up", 0),
            ("sum(rate(x[5m]))", 3),
            (r#"x{a="((((("}"#, 1),
            (r#"x{a='\'(('}"#, 1),
            ("x{a=`((`}", 1),
            ("1 # ((((\n+ 1", 1),
            ("- - - -1", 4),
            ("1 - 1 - 1", 2),
            ("1 + 1 + 1 + 1", 3),
            ("a and b or c unless d", 3),
            (r#"x{a!="b",c=~"d"} > 1"#, 1),
            ("rate(x[5m]) * 2 > 1", 2),
            ("((1))", 2),
        ] {
            assert_eq!(text_depth(q), want, "{q}");
        }
    }

    #[test]
    fn durations_no_duration_holds_are_refused_before_the_parser_panics() {
        let opts = EngineOptions::default();
        for (q, ok) in [
            ("x offset 5m", true),
            ("x offset 300", true),
            ("rate(x[300])", true),
            ("x > 1e30", true),
            (r#"x{a="1e30"}[5m]"#, true),
            ("x offset 17777777777777777777777777777777777", false),
            ("x offset -1e30", false),
            ("rate(x[1e+30])", false),
            ("rate(x[Inf])", false),
            ("max_over_time(x[5m:NaN])", false),
        ] {
            assert_eq!(check_query_text(q, &opts).is_ok(), ok, "{q}");
            if ok {
                let _ = promql_parser::parser::parse(q);
            }
        }
    }

    #[test]
    fn tree_depth_counts_chains_without_parentheses() {
        for (q, want) in [
            ("1", 1),
            ("(1)", 2),
            ("1 + 1 + 1 + 1", 4),
            ("sum(rate(x[5m]))", 3),
            ("max_over_time(up[1h:1m])", 3),
        ] {
            let e = promql_parser::parser::parse(q).unwrap();
            assert_eq!(expr_depth(&e), want, "{q}");
        }
    }
}
