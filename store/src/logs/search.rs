//! Log search: newest first with cursor paging, and count-over-time histograms.

use std::collections::{BTreeSet, BinaryHeap};
use std::ops::Bound;
use std::sync::Arc;

use tantivy::collector::{Collector, HistogramCollector, SegmentCollector};
use tantivy::query::{
    AllQuery, BooleanQuery, EnableScoring, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{IndexRecordOption, OwnedValue, Value};
use tantivy::{DocAddress, Searcher, SegmentReader, TantivyDocument, TantivyError, Term};

use super::{LogStore, Partition};
use crate::partition::HOUR_NS;
use crate::{Deadline, StoreError, TenantId};

/// The deepest nesting of a log query the store parses, whatever a caller
/// allows: tantivy's query parser recurses once per level, and 3,000
/// levels overflow a 2 MiB thread stack.
pub const MAX_LOG_QUERY_DEPTH: usize = 1000;

/// A log search: a query string plus filters over a time range.
#[derive(Clone, Debug, Default)]
pub struct LogSearch {
    /// Query string (tantivy syntax, see README); empty matches everything.
    pub query: String,
    /// Inclusive start, Unix ns.
    pub start_ns: i64,
    /// Inclusive end, Unix ns.
    pub end_ns: i64,
    /// Only this service.
    pub service: Option<String>,
    /// Only records with at least this severity number.
    pub min_severity: Option<i32>,
    /// Only records of this trace (lowercase hex).
    pub trace_id: Option<String>,
    /// At most this many hits.
    pub limit: usize,
    /// Continue after this position of a previous page.
    pub cursor: Option<Cursor>,
    /// When the search stops with [`StoreError::DeadlineExceeded`]; checked
    /// between partitions, between segments and while collecting.
    pub deadline: Deadline,
}

/// A position in the newest-first order: (timestamp, sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    ts: i64,
    seq: u64,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts, self.seq)
    }

    /// Parses [`Cursor::encode`]'s output.
    pub fn parse(s: &str) -> Result<Cursor, StoreError> {
        let bad = || StoreError::InvalidArgument(format!("invalid cursor {s:?}"));
        let (ts, seq) = s.split_once('.').ok_or_else(bad)?;
        Ok(Cursor {
            ts: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// A histogram request: the search's filters plus a bucket width.
#[derive(Clone, Debug)]
pub struct HistogramRequest {
    /// Filters and range (limit and cursor are ignored).
    pub search: LogSearch,
    /// Bucket width in nanoseconds.
    pub step_ns: i64,
}

/// One matching record.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogHit {
    /// Unix ns.
    pub timestamp_ns: i64,
    /// Unix ns.
    pub observed_timestamp_ns: i64,
    /// Severity text.
    pub severity_text: String,
    /// Severity number.
    pub severity_number: i64,
    /// Body text.
    pub body: String,
    /// `service.name`.
    pub service: String,
    /// Hex, empty if none.
    pub trace_id: String,
    /// Hex, empty if none.
    pub span_id: String,
    /// Record attributes.
    pub attributes: serde_json::Value,
    /// Resource attributes.
    pub resource: serde_json::Value,
    /// Instrumentation scope name.
    pub scope: String,
}

/// A page of hits, newest first.
#[derive(Clone, Debug)]
pub struct SearchPage {
    /// The hits.
    pub hits: Vec<LogHit>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Fields a wildcard or regular expression may target (JSON fields cannot).
const REGEX_FIELDS: [&str; 6] = [
    "body",
    "service",
    "severity_text",
    "trace_id",
    "span_id",
    "scope",
];

/// Turns `term*` / `te?m` words into tantivy regex syntax (`field:/term.*/`),
/// since the query grammar reads wildcards but the parser does not run them.
fn rewrite_wildcards(q: &str) -> Result<String, StoreError> {
    let mut out = String::with_capacity(q.len());
    let mut in_quotes = false;
    let mut in_regex = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| -> Result<(), StoreError> {
        out.push_str(&rewrite_word(word)?);
        word.clear();
        Ok(())
    };
    for c in q.chars() {
        if in_quotes || in_regex {
            out.push(c);
            if c == '"' && in_quotes {
                in_quotes = false;
            } else if c == '/' && in_regex {
                in_regex = false;
            }
            continue;
        }
        match c {
            '"' => {
                flush(&mut word, &mut out)?;
                in_quotes = true;
                out.push(c);
            }
            '/' if word.is_empty() || word.ends_with(':') => {
                out.push_str(&word);
                word.clear();
                in_regex = true;
                out.push(c);
            }
            c if c.is_whitespace() || "()".contains(c) => {
                flush(&mut word, &mut out)?;
                out.push(c);
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out)?;
    Ok(out)
}

fn rewrite_word(word: &str) -> Result<String, StoreError> {
    let (prefix, rest) = match word.find(|c| c != '-' && c != '+') {
        Some(i) => word.split_at(i),
        None => return Ok(word.to_owned()),
    };
    let (field, term) = match rest.split_once(':') {
        Some((f, t)) => (Some(f), t),
        None => (None, rest),
    };
    if !(term.contains('*') || term.contains('?')) || term == "*" || term.starts_with(['[', '{']) {
        return Ok(word.to_owned());
    }
    let field_name = field.unwrap_or("body");
    if !REGEX_FIELDS.contains(&field_name) {
        return Err(StoreError::InvalidArgument(format!(
            "wildcards are supported on {} (not {field_name:?})",
            REGEX_FIELDS.join(", ")
        )));
    }
    let mut re = String::new();
    for c in term.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c if "\\.+()[]{}|^$/".contains(c) => {
                re.push('\\');
                re.push(c);
            }
            // body and severity_text are lowercased at indexing.
            c if field_name == "body" || field_name == "severity_text" => {
                re.extend(c.to_lowercase())
            }
            c => re.push(c),
        }
    }
    Ok(format!("{prefix}{field_name}:/{re}/"))
}

/// Rewrites `NOT x` as `(* -x)`: tantivy reads a clause holding only a
/// negation as matching nothing, so `a AND NOT b` would find nothing.
fn rewrite_not(q: &str) -> String {
    let chars: Vec<char> = q.chars().collect();
    let mut out = String::with_capacity(q.len() + 8);
    // Paren depths at which a `(* -` awaits its closing `)`.
    let mut pending: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let close_operands = |out: &mut String, pending: &mut Vec<usize>, depth: usize| {
        while pending.last() == Some(&depth) {
            pending.pop();
            out.push(')');
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .map(|p| i + 1 + p)
                .unwrap_or(chars.len() - 1);
            out.extend(&chars[i..=end]);
            i = end + 1;
            // A trailing `~2` or `*` belongs to the phrase.
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ')' {
                out.push(chars[i]);
                i += 1;
            }
            close_operands(&mut out, &mut pending, depth);
            continue;
        }
        if c == '(' {
            depth += 1;
            out.push(c);
            i += 1;
            continue;
        }
        if c == ')' {
            out.push(c);
            depth = depth.saturating_sub(1);
            i += 1;
            close_operands(&mut out, &mut pending, depth);
            continue;
        }
        if c.is_whitespace() {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && !chars[i].is_whitespace()
            && chars[i] != '('
            && chars[i] != ')'
            && chars[i] != '"'
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if word == "NOT" {
            out.push_str("(* -");
            pending.push(depth);
            // Skip the blank between NOT and its operand.
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        out.push_str(&word);
        // `field:"phrase"` and `field:(...)` continue into the next token.
        if i < chars.len() && (chars[i] == '"' || chars[i] == '(') && word.ends_with(':') {
            continue;
        }
        close_operands(&mut out, &mut pending, depth);
    }
    out
}

/// How deep a log query nests as tantivy's parser will read it (after
/// wildcards and `NOT` are rewritten: `NOT x` becomes the group `(* -x)`),
/// counted without recursion, so a caller can refuse it before parsing.
pub fn log_query_depth(q: &str) -> Result<usize, StoreError> {
    Ok(nesting_depth(&rewrite_not(&rewrite_wildcards(q.trim())?)))
}

/// The deepest nesting of `(`, `[` and `{` in a query text, outside quoted
/// phrases and `/regexes/` (whose text the query parser does not nest into).
fn nesting_depth(q: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = q.chars().peekable();
    let mut prev_word_end = true;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            // A regex starts a term (`/x/` or `field:/x/`).
            '/' if prev_word_end => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '/' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev_word_end = c.is_whitespace() || "([{:".contains(c);
    }
    max
}

impl LogSearch {
    fn build_query(&self, p: &Partition, upper_ts: i64) -> Result<Box<dyn Query>, StoreError> {
        let f = &p.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let q = self.query.trim();
        // tantivy ends a JSON path with a NUL byte (and separates its
        // segments with 0x01): a control character in a field name such as
        // `attributes.a\0b:x` trips an assertion in its query parser.
        if let Some(c) = q.chars().find(|c| c.is_control() && !c.is_whitespace()) {
            return Err(StoreError::InvalidArgument(format!(
                "log query contains the control character U+{:04X}",
                u32::from(c)
            )));
        }
        if !q.is_empty() {
            let mut parser = QueryParser::for_index(&p.index, vec![f.body]);
            parser.set_conjunction_by_default();
            parser.allow_regexes();
            let text = rewrite_not(&rewrite_wildcards(q)?);
            let depth = nesting_depth(&text);
            if depth > MAX_LOG_QUERY_DEPTH {
                return Err(StoreError::InvalidArgument(format!(
                    "log query nesting depth {depth} exceeds the limit {MAX_LOG_QUERY_DEPTH}"
                )));
            }
            clauses.push((Occur::Must, parser.parse_query(&text)?));
        } else {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        clauses.push((
            Occur::Must,
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.timestamp, self.start_ns)),
                Bound::Included(Term::from_field_i64(f.timestamp, upper_ts)),
            )),
        ));
        if let Some(s) = &self.service {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.service, s),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(t) = &self.trace_id {
            let t = t.to_ascii_lowercase();
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.trace_id, &t),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(n) = self.min_severity {
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_i64(f.severity_number, i64::from(n))),
                    Bound::Unbounded,
                )),
            ));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }
}

/// The hit of stored document `doc` with timestamp `timestamp_ns` (a fast
/// field, not stored).
fn hit_from_doc(p: &Partition, doc: &TantivyDocument, timestamp_ns: i64) -> LogHit {
    let f = &p.fields;
    let text = |field| {
        doc.get_first(field)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let int = |field| doc.get_first(field).and_then(|v| v.as_i64()).unwrap_or(0);
    let json = |field| {
        doc.get_first(field)
            .map(|v| serde_json::to_value(OwnedValue::from(v)).unwrap_or_default())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
    };
    LogHit {
        timestamp_ns,
        observed_timestamp_ns: int(f.observed_timestamp),
        severity_text: text(f.severity_text),
        severity_number: int(f.severity_number),
        body: text(f.body),
        service: text(f.service),
        trace_id: text(f.trace_id),
        span_id: text(f.span_id),
        attributes: json(f.attributes),
        resource: json(f.resource),
        scope: text(f.scope),
    }
}

type Key = (i64, u64);

/// A collector that stops before each segment once its deadline passed
/// (tantivy cannot stop inside a segment's walk).
struct UntilDeadline<'a, C> {
    inner: C,
    deadline: &'a Deadline,
}

impl<C: Collector> Collector for UntilDeadline<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(&self, ord: u32, segment: &SegmentReader) -> tantivy::Result<C::Child> {
        self.inner.for_segment(ord, segment)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<C::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        if self.deadline.expired() {
            return Err(TantivyError::InternalError(
                "query deadline exceeded".into(),
            ));
        }
        self.inner.collect_segment(weight, ord, reader)
    }
}

/// The newest `limit` matches in one partition strictly before `cursor`,
/// newest first.
///
/// Nothing is scored. Segments are visited newest first (by their largest
/// timestamp); once `limit` hits are held, a segment whose newest record is
/// older than all of them cannot contribute, and neither can the ones after
/// it, so they are not searched.
fn top_in_partition(
    searcher: &Searcher,
    query: &dyn Query,
    limit: usize,
    cursor: Option<Cursor>,
    deadline: &Deadline,
) -> Result<Vec<(Key, DocAddress)>, StoreError> {
    let below: Key = cursor
        .map(|c| (c.ts, c.seq))
        .unwrap_or((i64::MAX, u64::MAX));
    let weight = query
        .weight(EnableScoring::disabled_from_searcher(searcher))
        .map_err(StoreError::index("search failed"))?;
    let readers = searcher.segment_readers();
    let mut segments = Vec::with_capacity(readers.len());
    for (ord, reader) in readers.iter().enumerate() {
        let fast = reader.fast_fields();
        let ts = fast
            .i64("timestamp")
            .map_err(StoreError::index("failed to read timestamps"))?
            .first_or_default_col(0);
        let seq = fast
            .u64("seq")
            .map_err(StoreError::index("failed to read sequence numbers"))?
            .first_or_default_col(0);
        segments.push((ts.max_value(), ord as u32, ts, seq));
    }
    segments.sort_by_key(|s| std::cmp::Reverse(s.0));
    // The best `limit` so far; the worst of them on top.
    let mut best: BinaryHeap<std::cmp::Reverse<(Key, DocAddress)>> =
        BinaryHeap::with_capacity(limit + 1);
    for (newest, ord, ts, seq) in segments {
        if best.len() >= limit && best.peek().is_some_and(|w| (newest, u64::MAX) < w.0.0) {
            break;
        }
        deadline.check()?;
        let reader = &readers[ord as usize];
        let alive = reader.alive_bitset();
        // tantivy's callback cannot stop the walk: once expired, the rest
        // of the segment's blocks are skipped unread.
        let mut blocks = 0u32;
        let mut expired = false;
        weight
            .for_each_no_score(reader, &mut |docs| {
                blocks = blocks.wrapping_add(1);
                if expired || (blocks.is_multiple_of(64) && deadline.expired()) {
                    expired = true;
                    return;
                }
                for &doc in docs {
                    if alive.is_some_and(|a| !a.is_alive(doc)) {
                        continue;
                    }
                    let key = (ts.get_val(doc), seq.get_val(doc));
                    if key >= below {
                        continue;
                    }
                    if best.len() < limit {
                        best.push(std::cmp::Reverse((key, DocAddress::new(ord, doc))));
                    } else if best.peek().is_some_and(|w| key > w.0.0) {
                        best.pop();
                        best.push(std::cmp::Reverse((key, DocAddress::new(ord, doc))));
                    }
                }
            })
            .map_err(StoreError::index("search failed"))?;
        deadline.check()?;
    }
    Ok(best.into_sorted_vec().into_iter().map(|r| r.0).collect())
}

impl LogStore {
    /// Parses the query against an empty index, so a bad query is an error
    /// even when no partition is in range.
    fn check_query(&self, s: &LogSearch) -> Result<(), StoreError> {
        s.build_query(&self.query_check, s.end_ns).map(|_| ())
    }

    /// The newest `limit` records matching `s` (strictly older than its cursor).
    pub fn search(&self, tenant: &TenantId, s: &LogSearch) -> Result<SearchPage, StoreError> {
        self.check_query(s)?;
        let limit = s.limit.clamp(1, 10_000);
        let upper = s.cursor.map(|c| c.ts.min(s.end_ns)).unwrap_or(s.end_ns);
        // Each hit keeps the searcher that found it: a commit or merge may
        // reload the partition's reader meanwhile, and renumber its segments.
        let mut best: Vec<(Key, Arc<Partition>, Searcher, DocAddress)> = Vec::new();
        for p in self.partitions_in(tenant, s.start_ns, upper) {
            // Partitions come newest first: once full, an older hour cannot contribute.
            if best.len() >= limit && best[limit - 1].0.0 >= p.hour_ns + HOUR_NS {
                break;
            }
            s.deadline.check()?;
            let searcher = p.reader.searcher();
            let query = s.build_query(&p, upper)?;
            for (k, addr) in
                top_in_partition(&searcher, query.as_ref(), limit, s.cursor, &s.deadline)?
            {
                best.push((k, p.clone(), searcher.clone(), addr));
            }
            best.sort_by_key(|b| std::cmp::Reverse(b.0));
            best.truncate(limit);
        }
        let next_cursor = (best.len() == limit)
            .then(|| best.last().map(|(k, _, _, _)| Cursor { ts: k.0, seq: k.1 }))
            .flatten();
        let mut hits = Vec::with_capacity(best.len());
        for ((ts, _), p, searcher, addr) in &best {
            let doc: TantivyDocument = searcher
                .doc(*addr)
                .map_err(StoreError::index("failed to read document"))?;
            hits.push(hit_from_doc(p, &doc, *ts));
        }
        Ok(SearchPage { hits, next_cursor })
    }

    /// Counts of matching records per bucket of `step_ns` from `start_ns`.
    pub fn histogram(
        &self,
        tenant: &TenantId,
        h: &HistogramRequest,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let s = &h.search;
        self.check_query(s)?;
        if h.step_ns <= 0 {
            return Err(StoreError::InvalidArgument("step must be positive".into()));
        }
        // In i128: `end - start` overflows i64 for extreme ranges.
        let span = (i128::from(s.end_ns) - i128::from(s.start_ns)).max(0) as u128 + 1;
        let n = span.div_ceil(h.step_ns as u128);
        if n > 11_000 {
            return Err(StoreError::InvalidArgument(format!(
                "{n} buckets requested; at most 11000: use a larger step"
            )));
        }
        let n = n as usize;
        let mut counts = vec![0u64; n];
        for p in self.partitions_in(tenant, s.start_ns, s.end_ns) {
            s.deadline.check()?;
            let searcher = p.reader.searcher();
            let query = s.build_query(&p, s.end_ns)?;
            let collector = HistogramCollector::new::<i64>(
                "timestamp".to_owned(),
                s.start_ns,
                h.step_ns as u64,
                n,
            );
            let collector = UntilDeadline {
                inner: collector,
                deadline: &s.deadline,
            };
            let part = match searcher.search(query.as_ref(), &collector) {
                Ok(part) => part,
                // Stopped by the deadline: say so, not "histogram failed".
                Err(_) if s.deadline.expired() => {
                    s.deadline.check()?;
                    return Err(StoreError::DeadlineExceeded);
                }
                Err(e) => return Err(StoreError::index("histogram failed")(e)),
            };
            for (c, add) in counts.iter_mut().zip(part) {
                *c += add;
            }
        }
        Ok(counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let offset = (i as i64).saturating_mul(h.step_ns);
                (s.start_ns.saturating_add(offset), c)
            })
            .collect())
    }

    /// Services that have logs in `[start_ns, end_ns]`.
    pub fn services(
        &self,
        tenant: &TenantId,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<BTreeSet<String>, StoreError> {
        self.services_within(tenant, start_ns, end_ns, &Deadline::none())
    }

    /// [`LogStore::services`], stopping at `deadline`.
    pub fn services_within(
        &self,
        tenant: &TenantId,
        start_ns: i64,
        end_ns: i64,
        deadline: &Deadline,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for p in self.partitions_in(tenant, start_ns, end_ns) {
            let searcher = p.reader.searcher();
            for seg in searcher.segment_readers() {
                deadline.check()?;
                let inv = seg
                    .inverted_index(p.fields.service)
                    .map_err(StoreError::index("failed to read terms"))?;
                let mut terms = inv
                    .terms()
                    .stream()
                    .map_err(StoreError::index("failed to read terms"))?;
                while terms.advance() {
                    if let Ok(s) = std::str::from_utf8(terms.key()) {
                        out.insert(s.to_owned());
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_regexes() {
        for (q, want) in [
            ("error", "error"),
            ("Err*", "body:/err.*/"),
            (
                "service:check* AND -tim?out",
                "service:/check.*/ AND -body:/tim.out/",
            ),
            ("\"a* b\" x", "\"a* b\" x"),
            ("body:/re.*x/", "body:/re.*x/"),
            ("a:*", "a:*"),
            ("n:[1 TO 5]", "n:[1 TO 5]"),
            ("(foo* OR bar)", "(body:/foo.*/ OR bar)"),
        ] {
            assert_eq!(rewrite_wildcards(q).unwrap(), want, "{q}");
        }
        assert!(rewrite_wildcards("attributes.user:al*").is_err());
    }

    #[test]
    fn not_becomes_a_standalone_negation() {
        for (q, want) in [
            ("a AND NOT b", "a AND (* -b)"),
            ("NOT \"x y\" c", "(* -\"x y\") c"),
            ("a AND NOT (b OR c)", "a AND (* -(b OR c))"),
            ("NOT field:\"p q\"", "(* -field:\"p q\")"),
            ("plain", "plain"),
        ] {
            assert_eq!(rewrite_not(q), want, "{q}");
        }
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor { ts: -5, seq: 42 };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        assert!(Cursor::parse("x").is_err());
    }
}
