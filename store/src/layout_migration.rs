//! Migration of a format 1 data directory (tenants beside `periscope.json`,
//! `periscope.lock` and `wal/`) to format 2 (tenants under `tenants/`).
//!
//! Crash-safe and idempotent: every step is one rename (or the creation of
//! a directory), each made durable before the next, and the version file is
//! written last. A crash anywhere leaves format 1 in `periscope.json`, and
//! the next open resumes where the crash left off.
//!
//! The one ambiguity is a format 1 tenant called `tenants`: its directory
//! has the name the container will have. So the container is built under a
//! name no tenant id can have ([`STAGING`]), holding a marker file
//! ([`MARKER`], also not a tenant id), and renamed into place only when
//! created; a `tenants/` directory without the marker is that tenant, moved
//! aside (to [`OLD_TENANTS`]) first. Entries that are not tenant
//! directories (a file, a directory without `logs`, `traces` or `metrics`,
//! a name that is not a tenant id) are left where they are, with a warning.

use std::path::Path;

use crate::layout::{TENANTS_DIR, sync_dir, write_version};
use crate::{StoreError, TenantId};

/// The container while it is being made (`+` is not allowed in tenant ids).
const STAGING: &str = "tenants+new";
/// A file in the container marking it as one (not a tenant called `tenants`).
const MARKER: &str = "+tenants";
/// Where a format 1 tenant called `tenants` waits while the container takes its name.
const OLD_TENANTS: &str = "tenants+v1";
/// The directories a format 1 tenant directory may hold.
const STORES: [&str; 3] = ["logs", "traces", "metrics"];

/// Moves every tenant directory of a format 1 data dir into `tenants/`,
/// then records format 2.
pub(crate) fn migrate_v1(root: &Path) -> Result<(), StoreError> {
    let container = root.join(TENANTS_DIR);
    let old_tenants = root.join(OLD_TENANTS);
    // 1. A `tenants/` without the marker is a format 1 tenant: move it aside.
    if container.exists() && !container.join(MARKER).exists() {
        if !is_v1_tenant_dir(&container) {
            return Err(StoreError::Format {
                path: container,
                message: "cannot migrate the data dir to format 2: this is neither a format 1 tenant nor the tenants directory; move it away".into(),
            });
        }
        if old_tenants.exists() {
            return Err(conflict(&container, &old_tenants));
        }
        rename(&container, &old_tenants, root)?;
    }
    // 2. The container, with its marker, renamed into place once complete.
    if !container.exists() {
        let staging = root.join(STAGING);
        if staging.exists() {
            // Left by a crash before its rename; it holds only the marker.
            std::fs::remove_dir_all(&staging)
                .map_err(StoreError::io("failed to remove", &staging))?;
        }
        std::fs::create_dir(&staging).map_err(StoreError::io("failed to create", &staging))?;
        let marker = staging.join(MARKER);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io("failed to create", &marker))?;
        sync_dir(&staging)?;
        rename(&staging, &container, root)?;
    }
    // 3. The tenant called `tenants`, if it was moved aside.
    if old_tenants.is_dir() {
        let target = container.join(TENANTS_DIR);
        if target.exists() {
            return Err(conflict(&old_tenants, &target));
        }
        rename(&old_tenants, &target, root)?;
    }
    // 4. Every other tenant directory, one rename each.
    let mut moved = 0usize;
    for entry in std::fs::read_dir(root)
        .map_err(StoreError::io("failed to list data dir", root))?
        .flatten()
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if matches!(
            name,
            "wal" | TENANTS_DIR | "periscope.json" | "periscope.lock"
        ) {
            continue;
        }
        let path = entry.path();
        if TenantId::parse(name).is_err() || !is_v1_tenant_dir(&path) {
            if !name.ends_with(".tmp") {
                tracing::warn!(entry = %path.display(),
                    "not a tenant directory; left where it is by the data dir migration");
            }
            continue;
        }
        let target = container.join(name);
        if target.exists() {
            return Err(conflict(&path, &target));
        }
        rename(&path, &target, root)?;
        moved += 1;
    }
    sync_dir(&container)?;
    // 5. The commit point: from here on the directory is format 2. The
    // marker stays (not a tenant id, so never listed): should the version
    // file ever be set back to 1 by hand, the container still tells itself
    // apart from a tenant.
    write_version(root)?;
    tracing::info!(
        tenants = moved,
        "migrated the data dir to format 2 (tenants under tenants/)"
    );
    Ok(())
}

/// Whether a directory holds a format 1 tenant's stores (and nothing else
/// that Periscope does not write there).
fn is_v1_tenant_dir(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    let mut any = false;
    for e in entries.flatten() {
        let is_store = e.file_name().to_str().is_some_and(|n| STORES.contains(&n));
        if !is_store || !e.path().is_dir() {
            return false;
        }
        any = true;
    }
    any
}

/// Renames `from` to `to` and makes it durable (both are in `root` or
/// `root/tenants`, so fsyncing those covers it).
fn rename(from: &Path, to: &Path, root: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(StoreError::io("failed to move", from))?;
    if let Some(parent) = to.parent().filter(|p| *p != root) {
        sync_dir(parent)?;
    }
    sync_dir(root)
}

fn conflict(from: &Path, to: &Path) -> StoreError {
    StoreError::Format {
        path: from.to_owned(),
        message: format!(
            "cannot migrate the data dir to format 2: {} exists too (was a format 1 collector run on it?); move one of them away",
            to.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataDir;

    /// A format 1 data dir: the given tenants with a `logs` directory each.
    fn v1_dir(tenants: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("periscope.json"), b"{\"format_version\": 1}\n").unwrap();
        std::fs::write(root.join("periscope.lock"), b"").unwrap();
        std::fs::create_dir_all(root.join("wal")).unwrap();
        for t in tenants {
            let part = root.join(t).join("logs/2026-01-01T00");
            std::fs::create_dir_all(&part).unwrap();
            std::fs::write(part.join("meta.json"), t.as_bytes()).unwrap();
        }
        tmp
    }

    fn version(root: &Path) -> u32 {
        crate::layout::read_version(&root.join("periscope.json"), "format_version")
            .unwrap()
            .unwrap()
    }

    fn tenant_has_its_data(root: &Path, t: &str) {
        let meta = root
            .join("tenants")
            .join(t)
            .join("logs/2026-01-01T00/meta.json");
        assert_eq!(std::fs::read(&meta).unwrap(), t.as_bytes(), "{t}");
    }

    #[test]
    fn format_1_tenants_move_under_tenants_and_other_entries_stay() {
        let tmp = v1_dir(&["acme", "tenants", "logs", "x.tmp"]);
        let root = tmp.path();
        std::fs::write(root.join("notes.txt"), b"mine").unwrap();
        std::fs::create_dir_all(root.join("lost+found")).unwrap();
        std::fs::create_dir_all(root.join("backup/stuff")).unwrap();
        DataDir::open(root).unwrap();
        assert_eq!(version(root), 2);
        for t in ["acme", "tenants", "logs", "x.tmp"] {
            tenant_has_its_data(root, t);
            assert!(!root.join(t).join("logs").exists() || t == "tenants");
        }
        assert!(root.join("notes.txt").is_file());
        assert!(root.join("lost+found").is_dir());
        assert!(root.join("backup/stuff").is_dir());
        assert!(root.join("wal").is_dir());
        // Opened again: nothing moves.
        DataDir::open(root).unwrap();
        tenant_has_its_data(root, "acme");
    }

    #[test]
    fn a_migration_cut_short_at_every_step_resumes() {
        // The states a crash can leave, each opened by the next start.
        type Crash = fn(&Path);
        let cases: [(&str, Crash); 4] = [
            ("staging created, not renamed", |root| {
                std::fs::create_dir_all(root.join(STAGING)).unwrap();
            }),
            ("tenant `tenants` moved aside", |root| {
                std::fs::rename(root.join("tenants"), root.join(OLD_TENANTS)).unwrap();
            }),
            ("container in place, nothing moved", |root| {
                std::fs::rename(root.join("tenants"), root.join(OLD_TENANTS)).unwrap();
                std::fs::create_dir_all(root.join("tenants")).unwrap();
                std::fs::write(root.join("tenants").join(MARKER), b"").unwrap();
            }),
            ("some tenants moved", |root| {
                std::fs::rename(root.join("tenants"), root.join(OLD_TENANTS)).unwrap();
                std::fs::create_dir_all(root.join("tenants")).unwrap();
                std::fs::write(root.join("tenants").join(MARKER), b"").unwrap();
                std::fs::rename(root.join(OLD_TENANTS), root.join("tenants/tenants")).unwrap();
                std::fs::rename(root.join("acme"), root.join("tenants/acme")).unwrap();
            }),
        ];
        for (what, crash) in cases {
            let tmp = v1_dir(&["acme", "beta", "tenants"]);
            crash(tmp.path());
            assert_eq!(version(tmp.path()), 1, "{what}");
            DataDir::open(tmp.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(version(tmp.path()), 2, "{what}");
            for t in ["acme", "beta", "tenants"] {
                tenant_has_its_data(tmp.path(), t);
            }
        }
    }

    #[test]
    fn a_tenant_in_both_places_is_refused_not_overwritten() {
        let tmp = v1_dir(&["acme"]);
        DataDir::open(tmp.path()).unwrap();
        // As if a format 1 build ran on it afterwards and wrote `acme` again.
        std::fs::write(
            tmp.path().join("periscope.json"),
            b"{\"format_version\": 1}",
        )
        .unwrap();
        std::fs::create_dir_all(tmp.path().join("acme/logs")).unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("exists too"), "{err}");
        tenant_has_its_data(tmp.path(), "acme");
    }
}
