//! Locks whose poisoning is recovered on purpose.
//!
//! A panic while a lock is held (a bug) poisons it. The state these locks
//! guard stays usable after such a panic: it is replaced or updated in
//! steps that each leave it whole, and request panics are caught and
//! answered at the edge. Refusing the lock from then on would turn one bad
//! request into an outage, so every lock of this crate is taken with these
//! methods, which take it whatever happened before.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`], recovering a poisoned lock.
pub(crate) trait MutexRecover<T: ?Sized> {
    /// Locks, whether or not a holder panicked.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexRecover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`], recovering a poisoned lock.
pub(crate) trait RwLockRecover<T: ?Sized> {
    /// Read-locks, whether or not a holder panicked.
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    /// Write-locks, whether or not a holder panicked.
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockRecover<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}
