//! Files that are re-read when they change: the auth file, certificates.
//!
//! Watching is by polling the contents every few seconds, which sees every
//! way a file is replaced (an editor's rename, a Kubernetes Secret's
//! symlink swap, cert-manager's rotation) where file events miss some. A
//! file that no longer loads keeps the last good value: the failure is
//! logged and shown in `/metrics` until a good version arrives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::sync::{MutexRecover, RwLockRecover};

/// How often watched files are read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

type Loader<T> = dyn Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync;

/// A value loaded from files, replaced when they change.
pub struct Watched<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    load: Box<Loader<T>>,
    current: RwLock<Arc<T>>,
    /// The contents the current value (or the last failure) came from.
    seen: Mutex<[u8; 32]>,
    failing: AtomicBool,
    reloads: AtomicU64,
    failures: AtomicU64,
    loaded_at: AtomicU64,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

fn read_all(paths: &[PathBuf]) -> Result<(Vec<Vec<u8>>, [u8; 32]), String> {
    let mut h = Sha256::new();
    let mut all = Vec::with_capacity(paths.len());
    for p in paths {
        let b = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        h.update((b.len() as u64).to_le_bytes());
        h.update(&b);
        all.push(b);
    }
    Ok((all, h.finalize().into()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Loads `paths` with `load`. Fails, with the reason, when they do not
    /// load: a bad file at start stops the start.
    pub fn open(
        what: &'static str,
        paths: Vec<PathBuf>,
        load: impl Fn(&[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Arc<Watched<T>>, String> {
        let (bytes, digest) = read_all(&paths)?;
        let value = load(&bytes)?;
        Ok(Arc::new(Watched {
            what,
            paths,
            load: Box::new(load),
            current: RwLock::new(Arc::new(value)),
            seen: Mutex::new(digest),
            failing: AtomicBool::new(false),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            loaded_at: AtomicU64::new(now_secs()),
        }))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current.read_or_recover().clone()
    }

    /// Reads the files again and loads them if they changed (or always,
    /// with `force`). Returns whether a new value is in place.
    pub fn check(&self, force: bool) -> bool {
        let result = read_all(&self.paths).and_then(|(bytes, digest)| {
            let mut seen = self.seen.lock_or_recover();
            if !force && *seen == digest {
                return Ok(false);
            }
            *seen = digest;
            let value = (self.load)(&bytes)?;
            *self.current.write_or_recover() = Arc::new(value);
            Ok(true)
        });
        match result {
            Ok(false) => false,
            Ok(true) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                self.loaded_at.store(now_secs(), Ordering::Relaxed);
                self.failing.store(false, Ordering::Relaxed);
                tracing::info!(what = self.what, "reloaded");
                true
            }
            Err(e) => {
                // Logged once per bad version, not at every poll.
                if !self.failing.swap(true, Ordering::Relaxed) || force {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(what = self.what, error = %e, "reload failed; keeping the last good version");
                }
                false
            }
        }
    }

    /// Polls the files every [`POLL_INTERVAL`] until `stop`.
    pub fn spawn_poll(self: &Arc<Self>, stop: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let w = this.clone();
                let _ = tokio::task::spawn_blocking(move || w.check(false)).await;
            }
        });
    }

    /// Writes its state in the Prometheus text format, labelled `what`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let w = self.what;
        let _ = writeln!(
            out,
            "periscope_config_reload_ok{{file=\"{w}\"}} {}",
            u8::from(!self.failing.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "periscope_config_reloads_total{{file=\"{w}\"}} {}",
            self.reloads.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "periscope_config_reload_failures_total{{file=\"{w}\"}} {}",
            self.failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "periscope_config_last_reload_timestamp_seconds{{file=\"{w}\"}} {}",
            self.loaded_at.load(Ordering::Relaxed)
        );
    }

    /// Whether the files' latest version failed to load.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

/// `# HELP`/`# TYPE` lines for what [`Watched::render`] writes.
pub const RENDER_HEADER: &str = "\
# HELP periscope_config_reload_ok Whether the watched file's latest version loaded (0: the last good one is in use).
# TYPE periscope_config_reload_ok gauge
# HELP periscope_config_reloads_total Times the watched file changed and was loaded again.
# TYPE periscope_config_reloads_total counter
# HELP periscope_config_reload_failures_total Versions of the watched file that did not load.
# TYPE periscope_config_reload_failures_total counter
# HELP periscope_config_last_reload_timestamp_seconds When the watched file last loaded.
# TYPE periscope_config_last_reload_timestamp_seconds gauge
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_loaded_and_a_bad_version_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n");
        std::fs::write(&p, "1").unwrap();
        let parse = |b: &[Vec<u8>]| {
            std::str::from_utf8(&b[0])
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| "not a number".to_owned())
        };
        let w = Watched::open("n", vec![p.clone()], parse).unwrap();
        assert_eq!(*w.get(), 1);
        assert!(!w.check(false), "unchanged");
        std::fs::write(&p, "2").unwrap();
        assert!(w.check(false));
        assert_eq!(*w.get(), 2);
        std::fs::write(&p, "two").unwrap();
        assert!(!w.check(false));
        assert_eq!(*w.get(), 2);
        assert!(w.failing());
        let mut out = String::new();
        w.render(&mut out);
        assert!(
            out.contains("periscope_config_reload_ok{file=\"n\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("periscope_config_reload_failures_total{file=\"n\"} 1"),
            "{out}"
        );
        // A vanished file is a failure too.
        std::fs::remove_file(&p).unwrap();
        assert!(!w.check(false));
        assert_eq!(*w.get(), 2);
        std::fs::write(&p, "3").unwrap();
        assert!(w.check(false));
        assert_eq!(*w.get(), 3);
        assert!(!w.failing());
        assert!(Watched::open("n", vec![dir.path().join("none")], parse).is_err());
    }
}
