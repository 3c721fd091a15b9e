//! Discovery: which files match the include globs and none of the exclude
//! globs. `notify` events wake the tailer early and say why: files appeared,
//! moved or went away (a scan is due), or known files changed (only those
//! need a look). A slow periodic scan stays the source of truth, since
//! inotify limits, queue overflows and network file systems lose events.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::sync::MutexRecover;

/// Include and exclude globs.
#[derive(Debug, Clone)]
pub struct Globs {
    /// Files to tail.
    pub include: Vec<glob::Pattern>,
    /// Files never tailed (matched against the full path and the file name).
    pub exclude: Vec<glob::Pattern>,
}

impl Globs {
    /// Whether a path is excluded.
    pub fn excluded(&self, path: &Path) -> bool {
        let name = path.file_name().map(Path::new);
        self.exclude
            .iter()
            .any(|p| p.matches_path(path) || name.is_some_and(|n| p.matches_path(n)))
    }

    /// Whether a path matches an include glob (separators matched
    /// literally, as the expansion does) and no exclude glob.
    pub fn matches(&self, path: &Path) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.include.iter().any(|p| p.matches_path_with(path, opts)) && !self.excluded(path)
    }

    /// Expands the include globs (symlinks followed), minus excluded paths,
    /// sorted and without duplicates.
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for pat in &self.include {
            let Ok(paths) = glob::glob(pat.as_str()) else {
                continue;
            };
            for p in paths.flatten() {
                if !self.excluded(&p) {
                    out.push(p);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The deepest literal directory of each include glob (what to watch).
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .include
            .iter()
            .map(|p| {
                let mut root = PathBuf::new();
                for c in Path::new(p.as_str()).components() {
                    let s = c.as_os_str().to_string_lossy();
                    if matches!(c, Component::Normal(_)) && s.contains(['*', '?', '[']) {
                        break;
                    }
                    root.push(c.as_os_str());
                }
                // A literal file name: watch its directory.
                if root.as_os_str() == p.as_str() {
                    root.pop();
                }
                root
            })
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }
}

/// Changed paths kept between two takes; past this many, a scan is asked
/// for instead.
const MAX_CHANGED_PATHS: usize = 4096;

/// What the events since the last [`Wakeup::take`] say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// Files may have appeared, moved or gone away, or events were lost: a
    /// scan is due.
    pub rescan: bool,
    /// Files whose content or metadata changed.
    pub changed: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Pending {
    rescan: bool,
    changed: HashSet<PathBuf>,
}

/// A file system watcher that wakes the tailer and keeps what changed.
pub struct Wakeup {
    _watcher: Option<notify::RecommendedWatcher>,
    rx: Receiver<()>,
    /// Kept so that the channel never reports disconnection.
    _tx: SyncSender<()>,
    pending: Arc<Mutex<Pending>>,
}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeup").finish_non_exhaustive()
    }
}

/// Records one watcher event; false if it says nothing worth waking for.
fn note(pending: &Mutex<Pending>, res: notify::Result<notify::Event>) -> bool {
    let mut p = pending.lock_or_recover();
    let ev = match res {
        Ok(ev) => ev,
        Err(_) => {
            p.rescan = true;
            return true;
        }
    };
    match ev.kind {
        // Opening a file or directory says nothing new, and the scan
        // itself opens every directory: waking on those would scan again
        // at once, forever.
        EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write) => false,
        // Content or metadata of a path: only that file needs a look.
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
            if !ev.need_rescan() =>
        {
            for path in ev.paths {
                if p.changed.len() >= MAX_CHANGED_PATHS {
                    p.rescan = true;
                    break;
                }
                p.changed.insert(path);
            }
            true
        }
        // Created, removed, renamed, or unknown: the tree changed.
        _ => {
            p.rescan = true;
            true
        }
    }
}

impl Wakeup {
    /// Watches the roots recursively; failures are logged and leave the
    /// periodic scan alone in charge.
    pub fn new(roots: &[PathBuf]) -> Self {
        // One slot: events coalesce into a single pending wakeup.
        let (tx, rx) = sync_channel(1);
        let tx2 = tx.clone();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let pending2 = Arc::clone(&pending);
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if note(&pending2, res) {
                let _ = tx2.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                for r in roots {
                    if let Err(e) = w.watch(r, RecursiveMode::Recursive) {
                        tracing::warn!(root = %r.display(), error = %e, "cannot watch directory; relying on periodic scans");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no file system watcher; relying on periodic scans");
                None
            }
        };
        Wakeup {
            _watcher: watcher,
            rx,
            _tx: tx,
            pending,
        }
    }

    /// Waits up to `timeout` for a change event; true if one came.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        self.rx.recv_timeout(timeout).is_ok()
    }

    /// What changed since the last call.
    pub fn take(&self) -> Woken {
        let mut p = self.pending.lock_or_recover();
        Woken {
            rescan: std::mem::take(&mut p.rescan),
            changed: p.changed.drain().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude_roots() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for f in [
            "a/x/0.log",
            "a/x/0.log.1",
            "a/x/0.log.2.gz",
            "a/y/1.log.tmp",
            "b.log",
        ] {
            let p = base.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let g = Globs {
            include: vec![glob::Pattern::new(&format!("{}/a/*/*.log*", base.display())).unwrap()],
            exclude: vec![
                glob::Pattern::new("*.gz").unwrap(),
                glob::Pattern::new("*.tmp").unwrap(),
            ],
        };
        let got: Vec<String> = g
            .expand()
            .iter()
            .map(|p| p.strip_prefix(base).unwrap().display().to_string())
            .collect();
        assert_eq!(got, ["a/x/0.log", "a/x/0.log.1"]);
        assert_eq!(g.roots(), vec![base.join("a")]);
    }

    #[test]
    fn events_sort_into_rescans_and_changed_paths() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        let pending = Mutex::new(Pending::default());
        let ev = |kind, path: &str| Ok(notify::Event::new(kind).add_path(PathBuf::from(path)));
        let take = || {
            let mut p = pending.lock().unwrap();
            let mut changed: Vec<PathBuf> = p.changed.drain().collect();
            changed.sort();
            (std::mem::take(&mut p.rescan), changed)
        };
        assert!(!note(
            &pending,
            ev(EventKind::Access(AccessKind::Open(AccessMode::Any)), "/d")
        ));
        assert_eq!(take(), (false, vec![]));
        assert!(note(
            &pending,
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/d/a.log"
            )
        ));
        assert!(note(
            &pending,
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/d/b.log"
            )
        ));
        assert_eq!(
            take(),
            (
                false,
                vec![PathBuf::from("/d/a.log"), PathBuf::from("/d/b.log")]
            )
        );
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Other,
        ] {
            assert!(note(&pending, ev(kind, "/d/c.log")));
            assert_eq!(take(), (true, vec![]));
        }
        assert!(note(&pending, Err(notify::Error::generic("overflow"))));
        assert_eq!(take(), (true, vec![]));
    }
}
