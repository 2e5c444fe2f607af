//! Fuzzes `unpack` with archive bytes: any input unpacks verified runs or
//! gives an error naming the archive or the destination, never a panic, and
//! nothing is ever written outside the destination folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let archive = tmp.path().join("in.tar.zst");
    if std::fs::write(&archive, data).is_err() {
        return;
    }
    let dest = tmp.path().join("dest");
    match difflog::pack::unpack(&archive, &dest) {
        Ok(runs) => {
            for r in runs {
                assert!(r.starts_with(&dest), "{} outside the destination", r.display());
                assert!(!difflog::verify::verify_run(&r).damaged());
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("in.tar.zst") || m.contains("dest"), "{m}");
        }
    }
    // Only the archive and the destination exist beside each other.
    let mut names: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert!(names.len() <= 2, "{names:?}");
});
