//! Fuzzes the event-log reader: any bytes scan without a panic into a valid
//! prefix no longer than the input, and the records fold into a view.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scan = difflog::read::scan(data);
    assert!(scan.valid_len <= data.len() as u64);
    assert_eq!(scan.file_len, data.len() as u64);
    let view = difflog::read::RunView::build(&scan.records);
    let _ = view.workflow();
});
