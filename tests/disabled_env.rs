//! `DIFFLOG_MODE=disabled` turns all recording into no-ops. Its own test
//! binary, because it sets a process-wide environment variable.

mod common;

use common::{Req, TestPipeline};
use difflog::{autolog, AutologCall, Init};

#[test]
fn difflog_mode_disabled_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    std::env::set_var("DIFFLOG_MODE", "disabled");
    std::env::set_var("DIFFLOG_DIR", &runs);
    {
        let guard = autolog(Init::project("p")).unwrap();
        assert!(!guard.run().is_recording());
        let out = TestPipeline::new().call(&Req::new(&["a", "b"], 1)).unwrap();
        assert_eq!(out.len(), 2, "pipelines still run");
        guard.run().log_metric("m", 1.0, None).unwrap();
        guard.run().log_config(serde_json::json!({"k": 1})).unwrap();
    }
    assert!(!runs.exists(), "disabled mode created {}", runs.display());

    std::env::set_var("DIFFLOG_MODE", "sometimes");
    let err = autolog(Init::project("p")).err().unwrap().to_string();
    assert!(
        err.contains("DIFFLOG_MODE") && err.contains("sometimes") && err.contains("disabled"),
        "{err}"
    );

    // DIFFLOG_DIR is where runs go by default.
    std::env::set_var("DIFFLOG_MODE", "offline");
    autolog(Init::project("p")).unwrap().finish().unwrap();
    assert_eq!(difflog::read::find_runs(&runs).unwrap().len(), 1);
}
