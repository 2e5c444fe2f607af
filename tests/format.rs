//! The run directory format: the contract's examples, every event kind's round
//! trip, torn tails, corruption, reopening a crashed run, and bad directories.

mod common;

use common::{copy_dir, only_run, Req, Schemas, TestPipeline};
use difflog::event::*;
use difflog::event::{decode_record, encode_record};
use difflog::format::RunMeta;
use difflog::read::{LogProblemKind, RunDir, RunState};
use difflog::verify::{verify_run, Severity};
use difflog::{Init, Run};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

fn contract() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/README.md"))
        .unwrap()
}

/// The fenced block after `<!-- example: NAME -->` in schemas/README.md.
fn example(name: &str) -> String {
    let text = contract();
    let marker = format!("<!-- example: {name} -->");
    let at = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no example {name}"));
    let rest = &text[at + marker.len()..];
    let open = rest.find("```").unwrap();
    let body_start = open + rest[open..].find('\n').unwrap() + 1;
    let close = rest[body_start..].find("\n```").unwrap();
    rest[body_start..body_start + close + 1].to_string()
}

#[test]
fn the_contract_examples_parse_and_validate_verbatim() {
    let schemas = Schemas::load();
    let run_json: Value = serde_json::from_str(&example("run.json")).unwrap();
    schemas.check_run_json(&run_json);
    let meta: RunMeta = serde_json::from_value(run_json).unwrap();
    assert_eq!(meta.id, "20261127T103219.482Z-5f2c1a");

    let log = example("events.log");
    for line in log.lines() {
        schemas.check_record(&serde_json::from_str(&line[9..]).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join(&meta.id);
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("run.json"), example("run.json")).unwrap();
    std::fs::write(run_dir.join("events.log"), &log).unwrap();
    let r = RunDir::open(&run_dir).unwrap();
    assert!(r.log.problem.is_none(), "{:?}", r.log.problem);
    assert_eq!(r.records().len(), 11);
    assert_eq!(r.state(), RunState::Finished);
    let v = r.view();
    assert_eq!(v.calls.len(), 2);
    assert!(v.calls[&1].ok());
    assert_eq!(
        v.calls[&2].finished.as_ref().unwrap().status,
        CallStatus::Error
    );
    assert_eq!(v.workflow()[0]["stage"], "Pipeline-Call-1");
    assert_eq!(
        v.workflow()[0]["pipeline"]["class"],
        "StableDiffusionPipeline"
    );
    // The example's media file is not there: verify must say so, naming it.
    let rep = verify_run(&run_dir);
    assert!(rep.damaged());
    assert!(rep
        .findings
        .iter()
        .any(|f| f.message.contains("media/3b/") && f.message.contains("missing")));
}

fn every_kind() -> Vec<Event> {
    let digest = "ab".repeat(32);
    let path = format!("media/ab/{digest}.png");
    let video = difflog::event::Video {
        frames: 16,
        fps: 7.5,
        fps_from: Some("argument fps".into()),
        duration_s: 2.133,
    };
    let mut values = Map::new();
    values.insert("k".into(), json!({"nested": [1, 2.5, "x", null]}));
    vec![
        Event::RunStarted(RunStarted {
            run_id: "20261127T103219.482Z-5f2c1a".into(),
            format: 1,
            pid: 7,
            host: "h".into(),
            difflog_version: "0.1.0".into(),
            run_json_sha256: Some("ab".repeat(32)),
        }),
        Event::RunResumed(RunResumed {
            pid: 8,
            host: "h".into(),
            difflog_version: "0.1.0".into(),
            truncated_bytes: 17,
        }),
        Event::Config(ConfigEvent {
            values: values.clone(),
        }),
        Event::Pipeline(Box::new(PipelineEvent {
            pipeline: 1,
            class: "C".into(),
            model_id: "m".into(),
            revision: Some("r".into()),
            weights_digest: None,
            dtype: "f16".into(),
            device: "cuda:0".into(),
            components: values.clone(),
            scheduler: json!({"a": 1}),
        })),
        Event::CallStarted(CallStarted {
            call: 1,
            stage: "Pipeline-Call-1".into(),
            pipeline: 1,
            params: values,
            seeds: vec![0, u64::MAX],
            columns: vec!["Prompt".into(), "Generated-Image".into()],
        }),
        Event::Media(MediaEvent {
            key: "Generated-Video/Pipeline-Call-1".into(),
            digest: digest.clone(),
            path: path.clone(),
            bytes: 10,
            format: "png".into(),
            width: 8,
            height: 8,
            caption: Some("c".into()),
            call: Some(1),
            provenance: Some(difflog::event::Marks {
                c2pa: Some("difflog test signer, Acme".into()),
                watermark: Some(difflog::event::WatermarkMark {
                    method: "dwtDct".into(),
                    bits: "1011".into(),
                }),
                ..Default::default()
            }),
            video: Some(video.clone()),
        }),
        Event::Row(RowEvent {
            call: 1,
            table: "Result-Table/Pipeline-Call-1".into(),
            index: 0,
            cells: vec![
                Cell::Text {
                    column: "Prompt".into(),
                    value: "p".into(),
                },
                Cell::Number {
                    column: "Seed".into(),
                    value: u64::MAX.into(),
                },
                Cell::Number {
                    column: "Scale".into(),
                    value: serde_json::Number::from_f64(7.5).unwrap(),
                },
                Cell::Image {
                    column: "Generated-Image".into(),
                    digest,
                    path,
                    width: 8,
                    height: 8,
                    video: Some(video),
                },
                Cell::Null {
                    column: "Negative-Prompt".into(),
                },
            ],
        }),
        Event::CallFinished(CallFinished {
            call: 1,
            status: CallStatus::Error,
            error: Some("boom".into()),
            images: 1,
            timings_ms: Map::from_iter([("total".to_string(), json!(1.5))]),
        }),
        Event::Metric(MetricEvent {
            name: "m".into(),
            value: -0.25,
            step: Some(3),
        }),
        Event::RunFinished(RunFinished {
            status: RunStatus::Failed,
            error: Some("e".into()),
            crashed: true,
        }),
    ]
}

#[test]
fn every_event_kind_round_trips_and_matches_the_schema() {
    let schemas = Schemas::load();
    let events = every_kind();
    assert_eq!(events.len(), 10);
    for (i, ev) in events.into_iter().enumerate() {
        let line = encode_record(i as u64 + 1, "2026-11-27T10:32:19.000001Z", &ev).unwrap();
        schemas.check_record(&serde_json::from_slice(&line[9..line.len() - 1]).unwrap());
        let back = decode_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(back.seq, i as u64 + 1);
        assert_eq!(back.event, ev, "{} did not round-trip", ev.kind());
    }
}

/// A finished run with two calls, recorded for real.
fn recorded_run(root: &Path) -> PathBuf {
    let run = Run::create(Init::project("p").root(root)).unwrap();
    let mut p = TestPipeline::new();
    run.record(&mut p, &Req::new(&["one", "two"], 1)).unwrap();
    run.record(&mut p, &Req::new(&["three"], 9)).unwrap();
    run.finish().unwrap();
    only_run(root)
}

fn line_starts(log: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    for (i, b) in log.iter().enumerate() {
        if *b == b'\n' {
            v.push(i + 1);
        }
    }
    v
}

#[test]
fn a_log_cut_at_any_byte_reads_as_the_complete_records_before_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded_run(&tmp.path().join("a"));
    let log = std::fs::read(dir.join("events.log")).unwrap();
    let starts = line_starts(&log);
    let total = starts.len() - 1;
    let copy = tmp.path().join("copy");
    copy_dir(&dir, &copy);
    for cut in 0..=log.len() {
        std::fs::write(copy.join("events.log"), &log[..cut]).unwrap();
        let r = RunDir::open(&copy).unwrap();
        let complete = starts.iter().filter(|&&s| s <= cut).count() - 1;
        assert_eq!(r.records().len(), complete, "cut at {cut}");
        assert_eq!(r.log.valid_len as usize, starts[complete]);
        match &r.log.problem {
            None => assert_eq!(cut, starts[complete]),
            Some(p) => {
                assert_eq!(p.kind, LogProblemKind::TornTail, "cut at {cut}");
                assert_eq!(p.offset as usize, starts[complete]);
            }
        }
        // The view never claims more than the prefix holds.
        let v = r.view();
        for c in v.calls.values().filter(|c| c.ok()) {
            assert_eq!(c.rows.len() as u32, c.finished.as_ref().unwrap().images);
        }
    }
    assert_eq!(total, RunDir::open(&dir).unwrap().records().len());
    // A torn tail is a note for verify, never damage.
    let last = starts[total - 1];
    std::fs::write(copy.join("events.log"), &log[..last + 5]).unwrap();
    let rep = verify_run(&copy);
    assert!(!rep.damaged(), "{:?}", rep.findings);
    assert!(rep
        .findings
        .iter()
        .any(|f| f.severity == Severity::Note && f.message.contains("torn tail")));
}

#[test]
fn a_flipped_byte_mid_log_is_reported_with_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded_run(tmp.path());
    let mut log = std::fs::read(dir.join("events.log")).unwrap();
    let starts = line_starts(&log);
    let third = starts[2];
    log[third + 30] ^= 0x20;
    std::fs::write(dir.join("events.log"), &log).unwrap();
    let r = RunDir::open(&dir).unwrap();
    assert_eq!(r.records().len(), 2, "readers stop at the damage");
    let p = r.log.problem.clone().unwrap();
    assert!(matches!(p.kind, LogProblemKind::Corrupt { .. }));
    assert_eq!(p.offset as usize, third);
    let rep = verify_run(&dir);
    assert!(rep.damaged());
    let msg = &rep
        .findings
        .iter()
        .find(|f| f.severity == Severity::Damage)
        .unwrap()
        .message;
    assert!(
        msg.contains("events.log")
            && msg.contains(&format!("byte {third}"))
            && msg.contains("checksum"),
        "{msg}"
    );
    // A writer refuses to append after damage.
    let err = Run::reopen(&dir).err().unwrap();
    assert!(matches!(err, difflog::Error::CorruptLog { .. }), "{err}");
}

#[test]
fn reopening_a_crashed_run_cuts_the_torn_tail_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded_run(tmp.path());
    // What a kill leaves: the last records gone, half a record at the end,
    // a temporary media file.
    let log = std::fs::read(dir.join("events.log")).unwrap();
    let starts = line_starts(&log);
    let keep = starts[starts.len() - 2]; // drop run_finished
    let mut crashed = log[..keep].to_vec();
    crashed.extend_from_slice(&log[keep..keep + 20]);
    std::fs::write(dir.join("events.log"), &crashed).unwrap();
    let shard = std::fs::read_dir(dir.join("media"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(shard.join(".tmp-leftover"), b"half").unwrap();
    let before = RunDir::open(&dir).unwrap();
    assert_eq!(before.state(), RunState::Crashed);
    let n = before.records().len();

    let run = Run::reopen(&dir).unwrap();
    run.record(&mut TestPipeline::new(), &Req::new(&["four"], 20))
        .unwrap();
    run.finish().unwrap();
    assert!(!shard.join(".tmp-leftover").exists());
    Schemas::load().check_dir(&dir);
    let r = RunDir::open(&dir).unwrap();
    assert!(r.log.problem.is_none());
    let Event::RunResumed(res) = &r.records()[n].event else {
        panic!("no run_resumed")
    };
    assert_eq!(res.truncated_bytes, 20);
    assert_eq!(r.records()[n].seq, n as u64 + 1);
    let v = r.view();
    assert_eq!(v.calls.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(r.state(), RunState::Finished);
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn damaged_media_and_stray_files_are_found() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = recorded_run(tmp.path());
    // A stray file is a warning; garbage where a recorded image should be is damage.
    std::fs::write(dir.join("media").join("garbage.bin"), b"junk").unwrap();
    let rep = verify_run(&dir);
    assert!(!rep.damaged());
    assert!(rep
        .findings
        .iter()
        .any(|f| f.severity == Severity::Warning && f.message.contains("garbage.bin")));
    let v = RunDir::open(&dir).unwrap().view();
    let victim = dir.join(&v.media[0].path);
    std::fs::write(&victim, b"not a png at all").unwrap();
    let rep = verify_run(&dir);
    assert!(rep.damaged());
    assert!(rep
        .findings
        .iter()
        .any(|f| f.message.contains(&v.media[0].path)));
    std::fs::remove_file(&victim).unwrap();
    let rep = verify_run(&dir);
    assert!(rep
        .findings
        .iter()
        .any(|f| f.severity == Severity::Damage && f.message.contains("missing media file")));
}

#[test]
fn directories_that_are_not_runs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = RunDir::open(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("not a difflog run directory"),
        "{err}"
    );
    assert!(err.to_string().contains("run.json"), "{err}");
    let err = RunDir::open(tmp.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("run.json"), b"{not json").unwrap();
    let err = RunDir::open(&bad).unwrap_err();
    assert!(err.to_string().contains("invalid run.json"), "{err}");
    std::fs::write(bad.join("run.json"), br#"{"format": 2, "id": "x"}"#).unwrap();
    let err = RunDir::open(&bad).unwrap_err();
    assert!(err.to_string().contains("format version 2"), "{err}");
    std::fs::write(bad.join("run.json"), br#"{"format": 1, "id": "x"}"#).unwrap();
    let err = RunDir::open(&bad).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");

    let rep = verify_run(&bad);
    assert!(rep.damaged());
    // A log of random bytes: no panic, no records, reported.
    let dir = recorded_run(&tmp.path().join("r"));
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("events.log"), garbage).unwrap();
    let r = RunDir::open(&dir).unwrap();
    assert!(r.records().is_empty());
    assert!(r.log.problem.is_some());
}

#[test]
fn the_schemas_reject_what_v1_does_not_allow() {
    let schemas = Schemas::load();
    let ok = json!({"seq": 1, "ts": "2026-11-27T10:32:19.000001Z", "kind": "metric", "data": {"name": "m", "value": 1.0}});
    assert!(schemas.event.is_valid(&ok));
    let mut extra = ok.clone();
    extra["data"]["surprise"] = json!(1);
    assert!(!schemas.event.is_valid(&extra), "unknown field accepted");
    let mut kind = ok.clone();
    kind["kind"] = json!("row");
    assert!(
        !schemas.event.is_valid(&kind),
        "data of another kind accepted"
    );
    let mut ts = ok.clone();
    ts["ts"] = json!("yesterday");
    assert!(
        !schemas.event.is_valid(&ts),
        "a non-RFC-3339 timestamp accepted"
    );
    let bad_path = json!({"seq": 2, "ts": "2026-11-27T10:32:19Z", "kind": "media", "data": {
        "key": "k", "digest": "ab".repeat(32), "path": "../etc/passwd", "bytes": 1,
        "format": "png", "width": 1, "height": 1}});
    assert!(
        !schemas.event.is_valid(&bad_path),
        "a media path outside media/ accepted"
    );
}
