//! Arbitrary bytes as the newest WAL segment: opening the WAL (torn-tail
//! detection and truncation) and replaying it never panic, and a second
//! open finds nothing more to cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope_store::{Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("periscope-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut segment = b"PSCWAL\x01\x00".to_vec();
    segment.extend_from_slice(data);
    std::fs::write(dir.join("00000000000000000001.wal"), &segment).unwrap();
    if let Ok(wal) = Wal::<()>::open(&dir, WalOptions::default(), 1) {
        let mut first = 0;
        let _ = wal.replay(|_| {
            first += 1;
            Ok::<_, periscope_store::StoreError>(())
        });
        drop(wal);
        let wal = Wal::<()>::open(&dir, WalOptions::default(), 1).unwrap();
        let mut second = 0;
        let _ = wal.replay(|_| {
            second += 1;
            Ok::<_, periscope_store::StoreError>(())
        });
        assert_eq!(first, second, "replay changed after the tail was cut");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
