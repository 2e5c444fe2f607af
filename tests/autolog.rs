//! The two-line start: autolog makes every `pipeline.call` (AutologCall) record into the
//! active run. One test function, since the active run is process-wide.

mod common;

use common::{Req, Schemas, TestPipeline};
use difflog::read::{find_runs, RunDir, RunState};
use difflog::{autolog, AutologCall, Init};

#[test]
fn autolog_records_every_call_into_the_active_run() {
    let root = tempfile::tempdir().unwrap();
    let mut pipeline = TestPipeline::new();

    // Without autolog, calls run and nothing is recorded.
    assert_eq!(pipeline.call(&Req::new(&["before"], 1)).unwrap().len(), 1);
    assert!(difflog::run::autolog::active().is_none());

    {
        let _run = autolog(Init::project("diffusers_logging").root(root.path())).unwrap();
        let second = autolog(Init::project("other").root(root.path()));
        assert!(second.err().unwrap().to_string().contains("already active"));
        let mut req = Req::new(
            &[
                "a photograph of an astronaut riding a horse",
                "a photograph of a dragon",
            ],
            10,
        );
        req.negative = Some("ugly, deformed".into());
        req.per_prompt = 2;
        assert_eq!(pipeline.call(&req).unwrap().len(), 4);
        // A user's own pipeline class is recorded like any other.
        let mut own = TestPipeline::new();
        own.class = "MyOwnPipeline".into();
        own.call(&Req::new(&["mine"], 3)).unwrap();
        // The run is live while the guard lives.
        let dir = find_runs(root.path()).unwrap().remove(0);
        assert_eq!(RunDir::open(&dir).unwrap().state(), RunState::Live);
    }
    assert!(difflog::run::autolog::active().is_none());
    let runs = find_runs(root.path()).unwrap();
    assert_eq!(runs.len(), 1);
    Schemas::load().check_dir(&runs[0]);
    let r = RunDir::open(&runs[0]).unwrap();
    assert_eq!(
        r.state(),
        RunState::Finished,
        "dropping the guard finishes the run"
    );
    let v = r.view();
    assert_eq!(v.calls.len(), 2);
    assert_eq!(v.calls[&1].rows.len(), 4);
    assert_eq!(v.workflow()[1]["pipeline"]["class"], "MyOwnPipeline");
    assert_eq!(v.workflow()[1]["stage"], "Pipeline-Call-2");

    // After the guard is gone, calls are unrecorded again and a new autolog works.
    pipeline.call(&Req::new(&["after"], 1)).unwrap();
    let g = autolog(Init::project("again").root(root.path())).unwrap();
    g.finish().unwrap();
    assert_eq!(find_runs(root.path()).unwrap().len(), 2);
}
