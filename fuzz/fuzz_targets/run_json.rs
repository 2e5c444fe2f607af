//! Fuzzes `run.json` parsing: any bytes give a run description or an error
//! naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz/run.json");
    if let Err(e) = difflog::read::parse_meta(path, data) {
        assert!(e.to_string().contains("run.json"), "{e}");
    }
});
