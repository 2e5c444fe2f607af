//! Fuzzes the reading of other tools' metadata (issue 35): any bytes, as a
//! PNG, JPEG or WebP file, give texts or an error, and any texts a
//! generation or none — never a panic, never a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(chunks) = difflog::meta::texts_of_file(data) {
        let _ = difflog::meta::read(&chunks);
    }
    // The same bytes as the text of each chunk a tool is told by.
    let text = String::from_utf8_lossy(data).into_owned();
    for keyword in ["parameters", "prompt", "invokeai_metadata", "difflog"] {
        let _ = difflog::meta::read(&[(keyword.to_string(), text.clone())]);
    }
});
