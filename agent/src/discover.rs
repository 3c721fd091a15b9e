//! Discovery: which files match the include globs and none of the exclude
//! globs. `notify` events only wake the tailer early; the periodic scan made
//! here is the source of truth, since inotify limits, queue overflows and
//! network file systems lose events.

use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

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

/// A file system watcher that only signals "something changed".
pub struct Wakeup {
    _watcher: Option<notify::RecommendedWatcher>,
    rx: Receiver<()>,
    /// Kept so that the channel never reports disconnection.
    _tx: SyncSender<()>,
}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeup").finish_non_exhaustive()
    }
}

impl Wakeup {
    /// Watches the roots recursively; failures are logged and leave the
    /// periodic scan alone in charge.
    pub fn new(roots: &[PathBuf]) -> Self {
        // One slot: events coalesce into a single pending wakeup.
        let (tx, rx) = sync_channel(1);
        let tx2 = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening a file or directory says nothing new, and the scan
            // itself opens every directory: waking on those would scan
            // again at once, forever.
            if let Ok(ev) = &res
                && matches!(
                    ev.kind,
                    EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)
                )
            {
                return;
            }
            let _ = tx2.try_send(());
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
        }
    }

    /// Waits up to `timeout` for a change event; true if one came.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        self.rx.recv_timeout(timeout).is_ok()
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
}
