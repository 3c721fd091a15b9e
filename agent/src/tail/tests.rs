//! Tailer tests: targeted cases and a model-based property test driving
//! random write / rotate-by-rename / copytruncate / delete / crash-restart
//! sequences against a model of which lines must arrive.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::checkpoint::Store;
use crate::parse::Record;

fn opts(dir: &Path, max_line: usize) -> TailOptions {
    TailOptions {
        globs: Globs {
            include: vec![glob::Pattern::new(&format!("{}/*.log", dir.display())).unwrap()],
            exclude: vec![glob::Pattern::new("*.gz").unwrap()],
        },
        read_from: ReadFrom::Beginning,
        max_line_bytes: max_line,
        idle_close: Duration::from_secs(3600),
        max_open_files: 64,
        read_quantum: 4096,
        round_budget: 1 << 20,
        rotate_wait: Duration::ZERO,
        node_name: "node".into(),
        pods: None,
        parse: ParseOptions {
            max_line_bytes: max_line,
            multiline_start: None,
            parse_json: false,
            flush_timeout: Duration::from_secs(1),
        },
    }
}

fn append(path: &Path, lines: &[String]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Scans and polls until nothing more is read.
fn drain(t: &mut Tailer, out: &mut Vec<(FileId, Record)>) {
    t.scan(Instant::now());
    for _ in 0..10_000 {
        if t.poll(Instant::now(), out) == 0 {
            // One more round lets finished files drop.
            t.poll(Instant::now(), out);
            return;
        }
    }
    panic!("tailer never went quiet");
}

fn bodies(out: &[(FileId, Record)]) -> Vec<String> {
    out.iter().map(|(_, r)| r.body.clone()).collect()
}

fn new_tailer(dir: &Path, committed: Committed, first: bool) -> Tailer {
    Tailer::new(
        opts(dir, 1 << 20),
        committed,
        first,
        Arc::new(Stats::default()),
    )
}

#[test]
fn rename_rotation_reads_the_old_file_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, &["one".into()]);
    let mut t = new_tailer(dir.path(), Committed::default(), true);
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    append(&p, &["two".into()]); // unread when the file is renamed
    std::fs::rename(&p, dir.path().join("a.log.1")).unwrap();
    append(&p, &["three".into()]);
    drain(&mut t, &mut out);
    assert_eq!(bodies(&out), ["one", "two", "three"]);
    assert_eq!(
        t.open_files(),
        1,
        "the rotated file was closed after its end"
    );
}

#[test]
fn copytruncate_restarts_at_zero_even_if_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, &["first-aaaaaaaa".into(), "second".into()]);
    let mut t = new_tailer(dir.path(), Committed::default(), true);
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Refilled past the old offset before the tailer looks again.
    append(
        &p,
        &[
            "after-truncate-1".into(),
            "after-truncate-2".into(),
            "after-truncate-3".into(),
        ],
    );
    drain(&mut t, &mut out);
    assert_eq!(
        bodies(&out),
        [
            "first-aaaaaaaa",
            "second",
            "after-truncate-1",
            "after-truncate-2",
            "after-truncate-3"
        ]
    );
}

#[test]
fn deleted_while_open_is_drained_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, &["x".into()]);
    let mut t = new_tailer(dir.path(), Committed::default(), true);
    let mut out = Vec::new();
    t.scan(Instant::now());
    append(&p, &["y".into()]);
    std::fs::remove_file(&p).unwrap();
    drain(&mut t, &mut out);
    assert_eq!(bodies(&out), ["x", "y"]);
    assert_eq!(t.open_files(), 0);
}

#[test]
fn long_line_truncated_and_flagged_next_line_intact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let long = "z".repeat(3 * 1024 + 17);
    append(&p, &["before".into(), long, "after".into()]);
    let mut t = Tailer::new(
        opts(dir.path(), 1024),
        Committed::default(),
        true,
        Arc::new(Stats::default()),
    );
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    let b = bodies(&out);
    assert_eq!(b.len(), 3);
    assert_eq!(b[0], "before");
    assert_eq!(b[1].len(), 1024);
    assert_eq!(b[2], "after");
    assert!(
        out[1]
            .1
            .attributes
            .iter()
            .any(|kv| kv.key == "log.truncated")
    );
}

#[test]
fn first_start_honours_read_from_end_later_files_start_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("old.log"), &["old".into()]);
    let mut o = opts(dir.path(), 1 << 20);
    o.read_from = ReadFrom::End;
    let mut t = Tailer::new(o, Committed::default(), true, Arc::new(Stats::default()));
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    append(&dir.path().join("old.log"), &["old-new".into()]);
    append(&dir.path().join("new.log"), &["brand-new".into()]);
    drain(&mut t, &mut out);
    let mut b = bodies(&out);
    b.sort();
    assert_eq!(b, ["brand-new", "old-new"]);
}

#[test]
fn idle_close_reopen_and_open_file_budget() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        append(&dir.path().join(format!("{i}.log")), &[format!("a{i}")]);
    }
    let mut o = opts(dir.path(), 1 << 20);
    o.max_open_files = 2;
    o.idle_close = Duration::ZERO;
    let mut t = Tailer::new(o, Committed::default(), true, Arc::new(Stats::default()));
    let mut out = Vec::new();
    for _ in 0..6 {
        drain(&mut t, &mut out);
        assert!(t.open_files() <= 2);
    }
    for i in 0..5 {
        append(&dir.path().join(format!("{i}.log")), &[format!("b{i}")]);
    }
    for _ in 0..6 {
        drain(&mut t, &mut out);
        assert!(t.open_files() <= 2);
    }
    let mut b = bodies(&out);
    b.sort();
    assert_eq!(
        b,
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
    );
}

#[test]
fn inode_reuse_with_other_content_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, &["original content line".into()]);
    let meta = std::fs::metadata(&p).unwrap();
    // A checkpoint for this inode but another file's fingerprint.
    let committed = Committed::default();
    committed.apply(&Mark {
        id: file_id(&meta),
        fingerprint: Fingerprint {
            len: 10,
            crc: 12345,
        },
        path: p.clone(),
        offset: 5,
    });
    let mut t = new_tailer(dir.path(), committed, false);
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    assert_eq!(bodies(&out), ["original content line"]);
}

// ----- model-based test ------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Write {
        slot: usize,
        n: usize,
        pad: usize,
    },
    /// Writes the first part of a line, without its newline.
    WritePartial {
        slot: usize,
    },
    /// Copy to a name the tailer also follows, then truncate.
    CopyTruncateTailed {
        slot: usize,
    },
    Poll,
    Ack,
    Rename {
        slot: usize,
    },
    CopyTruncate {
        slot: usize,
    },
    Delete {
        slot: usize,
    },
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 1..40usize, 0..300usize).prop_map(|(slot, n, pad)| Op::Write { slot, n, pad }),
        2 => (0..3usize).prop_map(|slot| Op::WritePartial { slot }),
        4 => Just(Op::Poll),
        3 => Just(Op::Ack),
        1 => (0..3usize).prop_map(|slot| Op::Rename { slot }),
        1 => (0..3usize).prop_map(|slot| Op::CopyTruncate { slot }),
        2 => (0..3usize).prop_map(|slot| Op::CopyTruncateTailed { slot }),
        1 => (0..3usize).prop_map(|slot| Op::Delete { slot }),
        1 => Just(Op::Crash),
    ]
}

/// What the model knows about one file generation (content at one inode).
#[derive(Default)]
struct Gen {
    lines: Vec<String>,
    /// At its path (not renamed, deleted or truncated away).
    current: bool,
    /// The tailer scanned it while current (so it holds it open).
    seen: bool,
    /// A line whose first part is written, without its newline yet.
    open_line: Option<String>,
}

struct Harness {
    dir: tempfile::TempDir,
    store: Store,
    committed: Committed,
    tailer: Tailer,
    /// Read but not acknowledged.
    pending: Vec<(FileId, Record)>,
    acked: BTreeSet<String>,
    gens: Vec<Gen>,
    /// Current generation per slot.
    slot_gen: HashMap<usize, usize>,
    may_lose: BTreeSet<String>,
    written: BTreeSet<String>,
    next: usize,
    renames: usize,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let store = Store::new(&data);
        let committed = Committed::default();
        let tailer = Tailer::new(
            opts(&logs, 1 << 20),
            committed.clone(),
            true,
            Arc::new(Stats::default()),
        );
        Harness {
            dir,
            store,
            committed,
            tailer,
            pending: Vec::new(),
            acked: BTreeSet::new(),
            gens: Vec::new(),
            slot_gen: HashMap::new(),
            may_lose: BTreeSet::new(),
            written: BTreeSet::new(),
            next: 0,
            renames: 0,
        }
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn path(&self, slot: usize) -> PathBuf {
        self.logs().join(format!("f{slot}.log"))
    }

    fn delivered(&self) -> BTreeSet<String> {
        let mut s = self.acked.clone();
        s.extend(self.pending.iter().map(|(_, r)| r.body.clone()));
        s
    }

    /// The slot's generation leaves its path: unread lines of a generation
    /// the tailer never saw cannot arrive.
    fn leave(&mut self, slot: usize, content_destroyed: bool) {
        if let Some(g) = self.slot_gen.remove(&slot) {
            let delivered = self.delivered();
            let gn = &mut self.gens[g];
            gn.current = false;
            // An unterminated last line may arrive as it is; it need not.
            if let Some(frag) = gn.open_line.take() {
                self.written.insert(frag.clone());
                self.may_lose.insert(frag);
            }
            if !gn.seen || content_destroyed {
                for l in &gn.lines {
                    if !delivered.contains(l) {
                        self.may_lose.insert(l.clone());
                    }
                }
            }
        }
    }

    fn gen_of(&mut self, slot: usize) -> usize {
        match self.slot_gen.get(&slot) {
            Some(g) => *g,
            None => {
                self.gens.push(Gen {
                    current: true,
                    ..Default::default()
                });
                self.slot_gen.insert(slot, self.gens.len() - 1);
                self.gens.len() - 1
            }
        }
    }

    fn scan_poll(&mut self) {
        self.tailer.scan(Instant::now());
        for g in self.slot_gen.values() {
            self.gens[*g].seen = true;
        }
        for _ in 0..3 {
            self.tailer.poll(Instant::now(), &mut self.pending);
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::WritePartial { slot } => {
                let g = self.gen_of(slot);
                if self.gens[g].open_line.is_none() {
                    self.next += 1;
                    let frag = format!("L{}-partial", self.next);
                    let mut f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.path(slot))
                        .unwrap();
                    f.write_all(frag.as_bytes()).unwrap();
                    self.gens[g].open_line = Some(frag);
                }
            }
            Op::Write { slot, n, pad } => {
                let g = self.gen_of(slot);
                let mut lines: Vec<String> = Vec::new();
                if let Some(frag) = self.gens[g].open_line.take() {
                    // Completes the open line first.
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(self.path(slot))
                        .unwrap();
                    writeln!(f, "-done").unwrap();
                    lines.push(format!("{frag}-done"));
                    self.written.insert(format!("{frag}-done"));
                }
                let fresh: Vec<String> = (0..n)
                    .map(|_| {
                        self.next += 1;
                        format!("L{}-{}", self.next, "p".repeat((self.next * 7 + pad) % 300))
                    })
                    .collect();
                append(&self.path(slot), &fresh);
                self.written.extend(fresh.iter().cloned());
                lines.extend(fresh);
                self.gens[g].lines.extend(lines);
            }
            Op::Poll => self.scan_poll(),
            Op::Ack => {
                let marks = self.tailer.marks();
                self.acked
                    .extend(self.pending.drain(..).map(|(_, r)| r.body));
                for m in &marks {
                    self.committed.apply(m);
                }
                self.store.save(self.committed.snapshot()).unwrap();
            }
            Op::Rename { slot } => {
                if self.path(slot).exists() {
                    self.renames += 1;
                    let to = self.logs().join(format!("f{slot}.log.{}", self.renames));
                    std::fs::rename(self.path(slot), to).unwrap();
                    self.leave(slot, false);
                }
            }
            Op::Delete { slot } => {
                if self.path(slot).exists() {
                    std::fs::remove_file(self.path(slot)).unwrap();
                    self.leave(slot, false);
                }
            }
            Op::CopyTruncate { slot } => {
                if self.path(slot).exists() {
                    OpenOptions::new()
                        .write(true)
                        .open(self.path(slot))
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    // The same inode goes on with new content: a new generation.
                    self.leave(slot, true);
                    self.gens.push(Gen {
                        current: true,
                        ..Default::default()
                    });
                    self.slot_gen.insert(slot, self.gens.len() - 1);
                }
            }
            Op::CopyTruncateTailed { slot } => {
                if self.path(slot).exists() {
                    self.renames += 1;
                    let copy = self.logs().join(format!("f{slot}-c{}.log", self.renames));
                    std::fs::copy(self.path(slot), &copy).unwrap();
                    OpenOptions::new()
                        .write(true)
                        .open(self.path(slot))
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                    // The copy holds the old content at a followed path: a
                    // current generation of its own, never written again.
                    let old = self.slot_gen.remove(&slot).unwrap();
                    let mut lines = std::mem::take(&mut self.gens[old].lines);
                    if let Some(frag) = self.gens[old].open_line.take() {
                        // Unterminated in the copy forever: may come as is.
                        self.written.insert(frag.clone());
                        self.may_lose.insert(frag);
                    }
                    self.gens[old].current = false;
                    self.gens.push(Gen {
                        lines: std::mem::take(&mut lines),
                        current: true,
                        ..Default::default()
                    });
                    self.gens.push(Gen {
                        current: true,
                        ..Default::default()
                    });
                    self.slot_gen.insert(slot, self.gens.len() - 1);
                }
            }
            Op::Crash => {
                // Unacknowledged lines of files no longer at their path are
                // gone with the process; the rest must be read again.
                let acked = self.acked.clone();
                for g in self.gens.iter().filter(|g| !g.current) {
                    for l in &g.lines {
                        if !acked.contains(l) {
                            self.may_lose.insert(l.clone());
                        }
                    }
                }
                for g in self.gens.iter_mut() {
                    g.seen = false;
                }
                self.pending.clear();
                let entries = self.store.load().unwrap();
                let first = entries.is_none();
                self.committed = Committed::from_entries(entries.unwrap_or_default());
                self.tailer = Tailer::new(
                    opts(&self.logs(), 1 << 20),
                    self.committed.clone(),
                    first,
                    Arc::new(Stats::default()),
                );
            }
        }
    }

    fn finish(&mut self) {
        for _ in 0..3 {
            self.scan_poll();
            let mut out = Vec::new();
            drain(&mut self.tailer, &mut out);
            self.pending.extend(out);
        }
        self.apply(&Op::Ack);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn tailer_never_loses_or_invents_lines(ops in proptest::collection::vec(op(), 1..40)) {
        let mut h = Harness::new();
        for o in &ops {
            h.apply(o);
        }
        h.finish();
        for l in &h.acked {
            prop_assert!(h.written.contains(l), "invented line {l:?}");
        }
        let missing: Vec<&String> = h.written.iter().filter(|l| !h.acked.contains(*l) && !h.may_lose.contains(*l)).collect();
        prop_assert!(missing.is_empty(), "lost {} lines, first {:?}; ops {:?}", missing.len(), missing.first(), ops);
    }
}

#[test]
fn copytruncate_copy_is_not_shipped_twice() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let first: Vec<String> = (0..50)
        .map(|i| format!("line {i:04} of the original"))
        .collect();
    append(&p, &first);
    let mut t = new_tailer(dir.path(), Committed::default(), true);
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    append(&p, &["unread before the copy".into()]);
    std::fs::copy(&p, dir.path().join("a-1.log")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&p, &["after".into()]);
    drain(&mut t, &mut out);
    let mut b = bodies(&out);
    b.sort();
    let mut want = first.clone();
    want.push("unread before the copy".into());
    want.push("after".into());
    want.sort();
    assert_eq!(
        b, want,
        "each line once: the copy is read only past what was read"
    );
    // Its checkpoint moves through the batch path: the mark says so.
    let marks = t.marks();
    assert!(
        marks
            .iter()
            .any(|m| m.path.ends_with("a-1.log") && m.offset > 0)
    );
}

#[test]
fn ten_mib_line_through_the_tailer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    f.write_all(b"2026-11-22T10:00:00Z stdout F ").unwrap();
    f.write_all(&vec![b'q'; 10 << 20]).unwrap();
    f.write_all(b"\n2026-11-22T10:00:01Z stdout F next\n")
        .unwrap();
    drop(f);
    let stats = Arc::new(Stats::default());
    let mut t = Tailer::new(
        opts(dir.path(), 1 << 20),
        Committed::default(),
        true,
        Arc::clone(&stats),
    );
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].1.body.len(),
        (1 << 20) - 30,
        "cut at max_line_bytes, prefix parsed"
    );
    assert!(
        out[0]
            .1
            .attributes
            .iter()
            .any(|kv| kv.key == "log.truncated")
    );
    assert_eq!(out[1].1.body, "next");
    assert_eq!(
        stats
            .lines_truncated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The checkpoint passes the whole long line.
    let m = t.marks();
    assert_eq!(m[0].offset, std::fs::metadata(&p).unwrap().len());
}

#[test]
fn change_event_reopens_an_idle_closed_file_without_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    append(&path, &["a".to_owned()]);
    let mut o = opts(dir.path(), 1 << 20);
    o.idle_close = Duration::ZERO;
    let mut t = Tailer::new(o, Committed::default(), true, Arc::new(Stats::default()));
    let mut out = Vec::new();
    drain(&mut t, &mut out);
    assert_eq!(t.open_files(), 0, "idle file closed");
    assert!(!t.scan_requested());

    append(&path, &["b".to_owned()]);
    // Rounds alone do not visit closed files.
    t.poll(Instant::now(), &mut out);
    assert_eq!(bodies(&out), ["a"]);
    t.touched(std::slice::from_ref(&path), Instant::now());
    for _ in 0..10 {
        t.poll(Instant::now(), &mut out);
    }
    assert_eq!(bodies(&out), ["a", "b"]);
    assert!(!t.scan_requested(), "a known file needs no scan");

    // An excluded file does not ask for a scan; an unknown matching one does.
    let gz = dir.path().join("1.log.gz");
    append(&gz, &["z".to_owned()]);
    t.touched(&[gz], Instant::now());
    assert!(!t.scan_requested());
    let new = dir.path().join("2.log");
    append(&new, &["c".to_owned()]);
    t.touched(std::slice::from_ref(&new), Instant::now());
    assert!(t.scan_requested());
    drain(&mut t, &mut out);
    assert!(!t.scan_requested());
    assert_eq!(bodies(&out), ["a", "b", "c"]);
}
