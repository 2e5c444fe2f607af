//! The recorder end to end: what a pipeline call leaves in the run directory,
//! read back through the reader, validated against the schemas.

mod common;

use common::{only_run, ClipPipeline as Clip, ClipRequest, Req, Schemas, TestPipeline};
use difflog::event::{CallStatus, Cell, Event, RunStatus};
use difflog::read::{RunDir, RunState};
use difflog::verify::verify_run;
use difflog::{Init, Run};
use serde_json::json;
use std::sync::Arc;

fn kinds(run: &RunDir) -> Vec<&'static str> {
    run.records().iter().map(|r| r.event.kind()).collect()
}

#[test]
fn a_call_records_table_workflow_seeds_media_and_timings() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(
        Init::project("diffusers_logging")
            .name("astronauts")
            .tag("t1")
            .config(json!({"experiment": "a", "lr": 0.5}))
            .root(root.path()),
    )
    .unwrap();
    let mut p = TestPipeline::new();
    let mut req = Req::new(&["an astronaut riding a horse", "a dragon"], 10);
    req.negative = Some("ugly, deformed".into());
    req.per_prompt = 2;
    let images = run.record(&mut p, &req).unwrap();
    assert_eq!(images.len(), 4);
    run.log_metric("clip_score", 0.31, Some(1)).unwrap();
    run.finish().unwrap();

    let dir = only_run(root.path());
    assert!(Schemas::load().check_dir(&dir) > 10);
    let r = RunDir::open(&dir).unwrap();
    assert!(r.log.problem.is_none());
    assert_eq!(r.state(), RunState::Finished);
    assert_eq!(r.meta.project, "diffusers_logging");
    assert_eq!(r.meta.name, "astronauts");
    assert_eq!(r.meta.tags, vec!["t1"]);
    let k = kinds(&r);
    assert_eq!(k.first(), Some(&"run_started"));
    assert_eq!(k.last(), Some(&"run_finished"));
    // Order: call_started, then per image media before row, then call_finished.
    let cs = k.iter().position(|k| *k == "call_started").unwrap();
    let cf = k.iter().position(|k| *k == "call_finished").unwrap();
    assert_eq!(
        k[cs + 1..cf],
        ["media", "row", "media", "row", "media", "row", "media", "row"]
    );

    let v = r.view();
    assert_eq!(v.config["experiment"], "a");
    let call = &v.calls[&1];
    assert_eq!(call.started.stage, "Pipeline-Call-1");
    assert_eq!(call.started.seeds, vec![10, 11, 12, 13]);
    assert_eq!(
        call.started.columns,
        ["Prompt", "Negative-Prompt", "Generated-Image", "Seed"]
    );
    assert_eq!(call.rows.len(), 4);
    for (i, row) in call.rows.iter().enumerate() {
        assert_eq!(row.table, "Result-Table/Pipeline-Call-1");
        assert_eq!(row.index as usize, i);
        let cols: Vec<&str> = row.cells.iter().map(|c| c.column()).collect();
        assert_eq!(cols, call.started.columns);
        let prompt = if i < 2 {
            "an astronaut riding a horse"
        } else {
            "a dragon"
        };
        assert!(matches!(&row.cells[0], Cell::Text { value, .. } if value == prompt));
        assert!(matches!(&row.cells[1], Cell::Text { value, .. } if value == "ugly, deformed"));
        assert!(
            matches!(&row.cells[3], Cell::Number { value, .. } if value.as_u64() == Some(10 + i as u64))
        );
        let Cell::Image {
            path,
            digest,
            width,
            height,
            ..
        } = &row.cells[2]
        else {
            panic!("no image cell: {row:?}")
        };
        assert_eq!((*width, *height), (16, 16));
        // The stored file is the PNG of exactly the image the call returned.
        let png = std::fs::read(dir.join(path)).unwrap();
        assert_eq!(&difflog::run::media::sha256_hex(&png), digest);
        let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(decoded, images[i]);
    }
    for m in &call.media {
        assert_eq!(m.key, "Generated-Image/Pipeline-Call-1");
        assert!(m.caption.as_deref().unwrap().starts_with('a'));
    }
    let f = call.finished.as_ref().unwrap();
    assert_eq!(f.status, CallStatus::Ok);
    assert_eq!(f.images, 4);
    for phase in ["text_encoding", "denoising", "decoding", "saving", "total"] {
        assert!(
            f.timings_ms[phase].as_f64().unwrap() >= 0.0,
            "{phase} missing"
        );
    }
    let wf = v.workflow();
    assert_eq!(wf.len(), 1);
    assert_eq!(wf[0]["stage"], "Pipeline-Call-1");
    assert_eq!(wf[0]["pipeline"]["class"], "TestPipeline");
    assert_eq!(wf[0]["params"]["num_images_per_prompt"], 2);
    assert_eq!(wf[0]["pipeline"]["scheduler"]["name"], "ddim");
    // Autolog's keys in autolog's shape (issue 14, item 4).
    assert_eq!(wf[0]["pipeline"]["pipeline-name"], "TestPipeline");
    assert_eq!(
        wf[0]["params"]["generator"],
        json!({"seed": wf[0]["params"]["seed"], "device": "cpu"})
    );
    assert_eq!(v.metrics[0].name, "clip_score");
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn sdxl_and_img2img_columns_and_the_input_image_is_stored_once() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    let mut p = TestPipeline::new();
    p.class = "StableDiffusionXLImg2ImgPipeline".into();
    p.second_prompts = true;
    p.input = Some(Arc::new(difflog::bench::synthetic_image(999, 16)));
    let mut req = Req::new(&["a", "b"], 1);
    req.per_prompt = 2;
    run.record(&mut p, &req).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    let v = RunDir::open(&dir).unwrap().view();
    let call = &v.calls[&1];
    assert_eq!(
        call.started.columns,
        [
            "Prompt",
            "Negative-Prompt",
            "Prompt-2",
            "Negative-Prompt-2",
            "Input-Image",
            "Generated-Image",
            "Seed"
        ]
    );
    let inputs: Vec<_> = call
        .media
        .iter()
        .filter(|m| m.key == "Input-Image/Pipeline-Call-1")
        .collect();
    assert_eq!(
        inputs.len(),
        1,
        "the shared input image is recorded once per call"
    );
    for row in &call.rows {
        assert!(matches!(&row.cells[2], Cell::Text { value, .. } if value.ends_with("(2)")));
        assert!(matches!(&row.cells[3], Cell::Null { .. }));
        assert!(matches!(&row.cells[4], Cell::Image { digest, .. } if *digest == inputs[0].digest));
    }
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn a_failed_call_is_recorded_with_its_error_and_later_calls_go_on() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    let mut p = TestPipeline::new();
    p.fail_after = Some(1);
    let err = run.record(&mut p, &Req::new(&["x", "y"], 5)).unwrap_err();
    assert!(err.to_string().contains("out of memory"));
    p.fail_after = None;
    run.record(&mut p, &Req::new(&["z"], 7)).unwrap();
    // A request that never began (prepare refused it) is not a call.
    assert!(run.record(&mut p, &Req::new(&[], 7)).is_err());
    run.finish().unwrap();
    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(v.calls.len(), 2);
    let failed = v.calls[&1].finished.as_ref().unwrap();
    assert_eq!(failed.status, CallStatus::Error);
    assert_eq!(
        failed.error.as_deref(),
        Some("out of memory after 1 image(s)")
    );
    assert_eq!(failed.images, 1);
    assert!(v.calls[&2].ok());
    assert_eq!(v.calls[&2].started.stage, "Pipeline-Call-2");
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn identical_images_are_stored_once() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    // (Generated images carry their recipe — call and row — so the same
    // request in two calls gives the same pixels in two files; images
    // logged with the same bytes are one file.)
    let img = difflog::bench::synthetic_image(42, 16);
    run.log_image("loose", img.clone(), None).unwrap();
    run.log_image("loose", img, Some("again")).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(v.media.len(), 2, "each log records its media entry");
    assert_eq!(v.media[0].digest, v.media[1].digest);
    let files: usize = std::fs::read_dir(dir.join("media"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, 1, "the same bytes are stored once");
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn the_pipeline_is_recorded_once_per_instance_description() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    let mut base = TestPipeline::new();
    base.class = "StableDiffusionXLPipeline".into();
    let mut refiner = TestPipeline::new();
    refiner.class = "StableDiffusionXLImg2ImgPipeline".into();
    run.record(&mut base, &Req::new(&["a"], 1)).unwrap();
    run.record(&mut refiner, &Req::new(&["a"], 1)).unwrap();
    run.record(&mut base, &Req::new(&["b"], 2)).unwrap();
    run.finish().unwrap();
    let v = RunDir::open(only_run(root.path())).unwrap().view();
    assert_eq!(v.pipelines.len(), 2);
    let stages: Vec<(String, u32)> = v
        .calls
        .values()
        .map(|c| (c.started.stage.clone(), c.started.pipeline))
        .collect();
    assert_eq!(
        stages,
        [
            ("Pipeline-Call-1".to_string(), 1),
            ("Pipeline-Call-2".to_string(), 2),
            ("Pipeline-Call-3".to_string(), 1)
        ]
    );
    assert_eq!(
        v.workflow()[1]["pipeline"]["class"],
        "StableDiffusionXLImg2ImgPipeline"
    );
}

#[test]
fn one_writer_per_run_and_the_error_names_the_holder() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.flush().unwrap();
    assert_eq!(RunDir::open(&dir).unwrap().state(), RunState::Live);
    let err = Run::reopen(&dir)
        .err()
        .expect("a second writer must be refused");
    let msg = err.to_string();
    assert!(matches!(err, difflog::Error::Locked { .. }), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    run.finish().unwrap();
    assert_eq!(RunDir::open(&dir).unwrap().state(), RunState::Finished);
    // A finished run is final.
    let err = Run::reopen(&dir)
        .err()
        .expect("a finished run cannot be reopened");
    assert!(err.to_string().contains("finished"), "{err}");
}

#[test]
fn drop_finishes_the_run_and_a_panic_marks_it_failed() {
    let root = tempfile::tempdir().unwrap();
    {
        let run = Run::create(Init::project("p").root(root.path())).unwrap();
        run.record(&mut TestPipeline::new(), &Req::new(&["a"], 1))
            .unwrap();
    }
    let dir = only_run(root.path());
    let r = RunDir::open(&dir).unwrap();
    assert_eq!(r.state(), RunState::Finished);
    assert_eq!(r.view().image_count(), 1);

    let root2 = tempfile::tempdir().unwrap();
    let p = root2.path().to_path_buf();
    let joined = std::thread::spawn(move || {
        let _run = Run::create(Init::project("p").root(&p)).unwrap();
        panic!("user code failed");
    })
    .join();
    assert!(joined.is_err());
    let r = RunDir::open(only_run(root2.path())).unwrap();
    assert_eq!(r.state(), RunState::Failed);
    let Some(Event::RunFinished(f)) = r.records().last().map(|x| &x.event) else {
        panic!("no run_finished")
    };
    assert_eq!(f.status, RunStatus::Failed);
}

#[test]
fn prompts_of_any_size_and_script_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("プロジェクト").root(root.path())).unwrap();
    let huge = "a".repeat(1 << 20);
    let texts = [
        huge.as_str(),
        "宇宙飛行士が馬に乗っている写真",
        "emoji 🚀 and \"quotes\" and \n newlines \t tabs \u{0} nul",
        "<script>alert(1)</script>",
    ];
    let mut p = TestPipeline::new();
    run.record(&mut p, &Req::new(&texts, 3)).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    Schemas::load().check_dir(&dir);
    let r = RunDir::open(&dir).unwrap();
    assert_eq!(r.meta.project, "プロジェクト");
    let rows = &r.view().calls[&1].rows;
    for (row, text) in rows.iter().zip(texts) {
        assert!(matches!(&row.cells[0], Cell::Text { value, .. } if value == text));
    }
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn bad_settings_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    // A root below a regular file cannot be created (root can write anywhere,
    // so permissions alone would not make this fail).
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Run::create(Init::project("p").root(file.join("runs")))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("not-a-dir/runs") && msg.contains("create runs root"),
        "{msg}"
    );

    let err = Run::create(Init::project("  ").root(root.path()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("project"), "{err}");

    let run = Run::create(Init::project("p").root(root.path().join("ok"))).unwrap();
    let err = run.log_metric("loss", f64::NAN, None).unwrap_err();
    assert!(err.to_string().contains("not a finite number"), "{err}");
    run.finish().unwrap();
}

#[test]
fn explicit_modes_disabled_records_nothing() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(
        Init::project("p")
            .root(root.path().join("r"))
            .mode(difflog::Mode::Disabled),
    )
    .unwrap();
    assert!(!run.is_recording());
    let out = run
        .record(&mut TestPipeline::new(), &Req::new(&["a", "b"], 1))
        .unwrap();
    assert_eq!(out.len(), 2, "the pipeline still runs");
    run.log_metric("m", 1.0, None).unwrap();
    run.finish().unwrap();
    assert!(
        !root.path().join("r").exists(),
        "disabled mode wrote something"
    );
}

#[test]
fn a_media_write_failure_fails_the_call_and_finish_reports_it() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(root.path())).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    // Make the media store unusable: a file where the directory should be.
    std::fs::remove_dir(dir.join("media")).unwrap();
    std::fs::write(dir.join("media"), b"in the way").unwrap();
    let images = run
        .record(&mut TestPipeline::new(), &Req::new(&["a"], 1))
        .unwrap();
    assert_eq!(images.len(), 1, "the caller still gets its images");
    let e = run.finish().unwrap_err();
    // Typed all the way up (issue 12): the writer's error keeps its kind and
    // its cause — here the media store's I/O error.
    match &e {
        difflog::Error::Recording {
            source: difflog::error::WriteError::Store { key, source },
            ..
        } => {
            assert_eq!(key, "Generated-Image/Pipeline-Call-1");
            assert!(matches!(**source, difflog::Error::Io { .. }), "{source:?}");
        }
        other => panic!("not a store error: {other:?}"),
    }
    assert_eq!(e.code(), "recording");
    let err = e.to_string();
    assert!(
        err.contains("recording failed") && err.contains("media"),
        "{err}"
    );
    let r = RunDir::open(&dir).unwrap();
    let v = r.view();
    let f = v.calls[&1].finished.as_ref().unwrap();
    assert_eq!(
        f.status,
        CallStatus::Error,
        "a call whose image was not stored is not ok"
    );
    assert!(f
        .error
        .as_deref()
        .unwrap()
        .contains("could not store Generated-Image/Pipeline-Call-1"));
    assert_eq!(r.state(), RunState::Failed);
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn a_full_queue_applies_back_pressure_and_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(
        Init::project("p")
            .root(root.path())
            .queue_capacity(1)
            .encoders(1),
    )
    .unwrap();
    let mut p = TestPipeline::new();
    p.size = 64;
    let mut req = Req::new(&["x"], 0);
    req.per_prompt = 40;
    run.record(&mut p, &req).unwrap();
    assert!(
        run.backpressure_waits() > 0,
        "40 images through a queue of 1 never waited"
    );
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(v.calls[&1].rows.len(), 40);
    assert!(!verify_run(&dir).damaged());
}

#[test]
fn one_run_can_be_shared_by_threads() {
    let root = tempfile::tempdir().unwrap();
    let run = Arc::new(Run::create(Init::project("p").root(root.path())).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let run = Arc::clone(&run);
            std::thread::spawn(move || {
                let mut p = TestPipeline::new();
                for i in 0..5 {
                    run.record(&mut p, &Req::new(&["t"], t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let dir = run.dir().unwrap().to_path_buf();
    Arc::try_unwrap(run).ok().unwrap().finish().unwrap();
    let v = RunDir::open(&dir).unwrap().view();
    assert_eq!(
        v.calls.keys().copied().collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u32>>()
    );
    assert!(v.calls.values().all(|c| c.ok() && c.rows.len() == 1));
    assert!(!verify_run(&dir).damaged());
}

/// Issue 12: a run whose writer died before its first record (run.json and
/// an empty log) is reopened with `run_started` as its first record, so it
/// verifies, instead of opening with `run_resumed`.
#[test]
fn reopening_a_run_that_died_before_its_first_record_starts_it_properly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("p").root(tmp.path())).unwrap();
    let dir = run.dir().unwrap().to_path_buf();
    run.finish().unwrap();
    // What a writer killed right after creating the files leaves.
    std::fs::write(dir.join("events.log"), b"").unwrap();
    let w = Run::reopen(&dir).unwrap();
    w.record(&mut TestPipeline::new(), &Req::new(&["after"], 1))
        .unwrap();
    w.finish().unwrap();
    let r = difflog::read::RunDir::open(&dir).unwrap();
    assert!(matches!(
        r.records()[0].event,
        difflog::event::Event::RunStarted(_)
    ));
    let rep = difflog::verify::verify_run(&dir);
    assert!(!rep.damaged(), "{:?}", rep.findings);
}

#[test]
fn a_video_call_records_its_frames_as_one_animated_png_with_rate_and_duration() {
    let root = tempfile::tempdir().unwrap();
    // The lossless file, on request (an MP4 is the default: below).
    let run = Run::create(
        Init::project("clips")
            .root(root.path())
            .video(difflog::run::video::VideoFormat::Apng),
    )
    .unwrap();
    let frames = run
        .record(
            &mut Clip,
            &ClipRequest {
                frames: 5,
                fps: 7.5,
                size: common::CLIP_SIZE,
            },
        )
        .unwrap();
    // A rate no video can have: the call's record says why, the run goes on.
    run.record(
        &mut Clip,
        &ClipRequest {
            frames: 2,
            fps: f64::NAN,
            size: common::CLIP_SIZE,
        },
    )
    .unwrap();
    run.finish().unwrap_err();

    let dir = only_run(root.path());
    assert!(Schemas::load().check_dir(&dir) > 5);
    let r = RunDir::open(&dir).unwrap();
    let v = r.view();
    let call = &v.calls[&1];
    assert_eq!(
        call.started.columns,
        [
            "Prompt",
            "Negative-Prompt",
            "Number-of-Frames",
            "Generated-Video",
            "Seed"
        ]
    );
    let [m] = &call.media[..] else {
        panic!("one media record: {:?}", call.media)
    };
    assert_eq!(m.key, "Generated-Video/Pipeline-Call-1");
    let want = difflog::event::Video {
        frames: 5,
        fps: 7.5,
        fps_from: Some("argument fps".into()),
        duration_s: 0.667,
    };
    assert_eq!(m.video.as_ref(), Some(&want));
    assert_eq!((m.width, m.height), (24, 16));
    let [row] = &call.rows[..] else {
        panic!("one row per video")
    };
    let Cell::Image {
        path,
        video,
        column,
        ..
    } = &row.cells[3]
    else {
        panic!("no video cell: {row:?}")
    };
    // Autolog's column: the frames the row's video has.
    assert!(
        matches!(&row.cells[2], Cell::Number { column, value } if column == "Number-of-Frames" && value.as_u64() == Some(5)),
        "{row:?}"
    );
    assert_eq!(column, "Generated-Video");
    assert_eq!(video.as_ref(), Some(&want));
    assert_eq!(call.finished.as_ref().unwrap().images, 1);
    // The file is an animated PNG of exactly the frames, at 2/15 s each.
    let file = std::fs::File::open(dir.join(path)).unwrap();
    let mut dec = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    assert_eq!(dec.info().animation_control.unwrap().num_frames, 5);
    // Like every PNG difflog generates, it says a trained model made it.
    assert!(
        dec.info()
            .utf8_text
            .iter()
            .any(|t| t.get_text().unwrap().contains("trainedAlgorithmicMedia")),
        "no XMP digital source type"
    );
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    for (i, want) in frames.iter().enumerate() {
        dec.next_frame(&mut buf).unwrap();
        let fc = dec.info().frame_control.unwrap();
        assert_eq!((fc.delay_num, fc.delay_den), (2, 15), "frame {i}");
        assert_eq!(
            &buf[..want.as_raw().len()],
            want.as_raw().as_slice(),
            "frame {i}"
        );
    }
    // `inspect` says it is a video.
    let i = difflog::cli::inspect::inspect_png(&dir.join(path), &Default::default()).unwrap();
    assert_eq!(i.frames, Some(5));
    let mut text = Vec::new();
    difflog::cli::inspect::inspect(&mut text, &dir.join(path), &Default::default(), false).unwrap();
    assert!(String::from_utf8(text)
        .unwrap()
        .contains("animated PNG: 5 frames"));
    // The second call failed to record its video and says why.
    let failed = v.calls[&2].finished.as_ref().unwrap();
    assert_eq!(failed.status, CallStatus::Error);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("frame rate of NaN"),
        "{failed:?}"
    );
    let rep = verify_run(&dir);
    assert!(!rep.damaged(), "{:?}", rep.findings);

    // The report shows its poster frame and what it plays.
    let out = tempfile::tempdir().unwrap();
    difflog::report::report(&dir, out.path(), true).unwrap();
    let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(page.contains("▶ 5 frames · 7.5 fps · 0.667 s"), "{page}");
    // `ls` counts it beside the images, `show` says what it plays.
    let mut text = Vec::new();
    difflog::cli::ls(&mut text, root.path(), false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(" 0+1v "), "{text}");
    let mut text = Vec::new();
    difflog::cli::show(&mut text, &dir, false).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("(video: 5 frames, 7.5 fps)"), "{text}");
    // And so does the comparison of runs, its cell playing the file.
    let cmp = tempfile::tempdir().unwrap();
    let opts = difflog::report::compare::CompareOptions::default();
    let done =
        difflog::report::compare::compare(std::slice::from_ref(&dir), cmp.path(), &opts).unwrap();
    let page = std::fs::read_to_string(done.index).unwrap();
    assert!(page.contains("▶ 5 frames · 7.5 fps · 0.667 s"), "{page}");
}

/// Issue 37: a video is kept as an MP4 (H.264) by default — a fraction of
/// the animated PNG's bytes — with the same record; one H.264 cannot hold
/// (an odd side) is kept as an animated PNG instead. `verify` checks the
/// MP4's frames and size against the record, `inspect` says what it is,
/// and the report and the comparison play it.
#[test]
fn a_video_is_kept_as_an_mp4_and_as_an_animated_png_where_h264_cannot_hold_it() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("clips").root(root.path())).unwrap();
    let clip = |frames, size| ClipRequest {
        frames,
        fps: 8.0,
        size,
    };
    run.record(&mut Clip, &clip(6, common::CLIP_SIZE)).unwrap();
    run.record(&mut Clip, &clip(3, (25, 15))).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    assert!(Schemas::load().check_dir(&dir) > 5);
    let v = RunDir::open(&dir).unwrap().view();
    let [mp4] = &v.calls[&1].media[..] else {
        panic!("{:?}", v.calls[&1].media)
    };
    assert_eq!(mp4.format, "mp4");
    assert!(mp4.path.ends_with(&format!("{}.mp4", mp4.digest)));
    assert_eq!(
        mp4.video.as_ref().map(|v| (v.frames, v.fps)),
        Some((6, 8.0))
    );
    let bytes = std::fs::read(dir.join(&mp4.path)).unwrap();
    assert_eq!(
        difflog::read::mp4_video(&bytes).unwrap(),
        difflog::read::Mp4Video {
            width: 24,
            height: 16,
            frames: 6
        }
    );
    let [odd] = &v.calls[&2].media[..] else {
        panic!("{:?}", v.calls[&2].media)
    };
    assert_eq!(
        (odd.format.as_str(), odd.width, odd.height),
        ("png", 25, 15)
    );
    assert_eq!(
        difflog::read::apng_frames(&std::fs::read(dir.join(&odd.path)).unwrap()),
        Ok(3)
    );
    let rep = verify_run(&dir);
    assert!(!rep.damaged(), "{:?}", rep.findings);

    let mut text = Vec::new();
    let with = difflog::cli::inspect::Against {
        run: Some(&dir),
        ..Default::default()
    };
    assert!(difflog::cli::inspect::inspect(&mut text, &dir.join(&mp4.path), &with, false).unwrap());
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("MP4 video (H.264): 24x16, 6 frames"),
        "{text}"
    );
    assert!(text.contains("verdict: belongs to run"), "{text}");
    // It says a trained model made it, as a generated PNG does, in its XMP
    // box: read by difflog and by ExifTool (an independent reader).
    let iptc = difflog::recipe::TRAINED_ALGORITHMIC_MEDIA;
    assert_eq!(
        difflog::read::mp4_xmp(&bytes),
        Ok(Some(difflog::recipe::xmp_packet(iptc)))
    );
    assert!(
        text.contains(&format!("digital source type  {iptc}")),
        "{text}"
    );
    let o = std::process::Command::new("exiftool")
        .args(["-j", "-n", "-XMP:all"])
        .arg(dir.join(&mp4.path))
        .output()
        .expect("exiftool (Debian's libimage-exiftool-perl; scripts/test installs it)");
    let read: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(read[0]["DigitalSourceType"], iptc, "{read}");
    assert_eq!(read[0]["CreatorTool"], "difflog", "{read}");

    // The report plays it in the table; the comparison in its grid.
    let out = tempfile::tempdir().unwrap();
    difflog::report::report(&dir, out.path(), true).unwrap();
    let page = std::fs::read_to_string(out.path().join("index.html")).unwrap();
    assert!(page.contains("<video class=\"thumb\""), "{page}");
    assert!(page.contains(&format!("{}.mp4", mp4.digest)), "{page}");
    let cmp = tempfile::tempdir().unwrap();
    let opts = difflog::report::compare::CompareOptions::default();
    let done =
        difflog::report::compare::compare(std::slice::from_ref(&dir), cmp.path(), &opts).unwrap();
    let page = std::fs::read_to_string(done.index).unwrap();
    assert!(page.contains("<video class=\"thumb\""), "{page}");
    assert!(!page.contains("unreadable"), "{page}");
}
