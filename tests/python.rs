//! difflog's Python package (issue 16) with real diffusers and torch.
//!
//! `scripts/python-env` installs torch, diffusers and transformers into
//! `.venv-diffusers` on first use and builds the package into it; a test
//! fails (never skips) when that cannot be done. The unittest suite in
//! `tests/python/test_autolog.py` records tiny random-weight pipelines built
//! without the hub (`tests/python/tiny.py`) and reads the runs back with
//! `difflog show --json`; here, besides running it, a Python process is
//! SIGKILLed mid-run and a Python-recorded run is uploaded to the real
//! MLflow server.

mod common;

use common::mlflow as mf;
use difflog::event::Cell;
use difflog::read::RunDir;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pyenv::{here, py, python};

fn unittest(case: &str) {
    let case = if case.contains('.') {
        case.to_string()
    } else {
        format!("test_autolog.{case}")
    };
    let o = py(&["-m", "unittest", "-v", &case], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{case} failed:\n{err}");
    assert!(err.contains("\nOK"), "no unittest verdict:\n{err}");
}

#[test]
fn text_to_image_table_workflow_seeds_images_outputs_and_failures() {
    unittest("TextToImage");
}

#[test]
fn sdxl_image_to_image_inpainting_sd3_flux_and_a_class_defined_later() {
    unittest("Families");
}

#[test]
fn recording_problems_run_objects_disabled_mode_and_exit() {
    unittest("Lifecycle");
}

#[test]
fn every_pipeline_of_the_zoo_is_unchanged_by_recording_and_remade_from_its_record() {
    // Issue 30: each class of tests/python/zoo.py called with and without
    // autolog under the same seeds (outputs, exceptions, global RNG states
    // identical), its run verified, every image re-made by difflog.remake.
    unittest("test_zoo.Zoo");
}

#[test]
fn torch_randn_reimplemented_bit_for_bit() {
    // Issue 33's groundwork: PyTorch's CPU randn (generator, uniforms,
    // Box-Muller blocks with their tail, float16/bfloat16, the state) in
    // tests/python/torch_randn.py, held against torch itself.
    unittest("test_torch_randn.TorchRandn");
}

/// `difflog inspect --json FILE`'s `generation`.
fn generation_of(file: &Path) -> serde_json::Value {
    let (o, v) = inspect_json(file, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    v["generation"].clone()
}

/// `difflog inspect --json FILE` with `more` arguments: the process and
/// its JSON (null when there is none).
fn inspect_json(
    file: &Path,
    more: &[&std::ffi::OsStr],
) -> (std::process::Output, serde_json::Value) {
    let o = Command::new(common::difflog_bin())
        .args(["inspect", "--json"])
        .arg(file)
        .args(more)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, v)
}

/// A number, or a string that is one (sd-parsers keeps A1111's as text).
fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// What sd-parsers reads of `files`, by file name.
fn sd_parsers(files: &[PathBuf]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut args = vec!["sd_parsers_read.py".to_string()];
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = py(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["file"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The fields where sd-parsers' reading (`theirs`) and difflog's
/// (`ours`, the normalised generation) both have a value: each must agree.
/// Returns how many were compared.
fn agree_with_sd_parsers(
    name: &str,
    theirs: &serde_json::Value,
    ours: &serde_json::Value,
) -> usize {
    let mut compared = 0;
    let mut same = |what: &str, a: Option<String>, b: Option<String>| {
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(a, b, "{name}: {what}: sd-parsers read {a:?}, difflog {b:?}");
            compared += 1;
        }
    };
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let num = |v: &serde_json::Value| number(v).map(|n| n.to_string());
    same("prompt", text(&theirs["prompt"]), text(&ours["prompt"]));
    same(
        "negative prompt",
        text(&theirs["negative_prompt"]),
        text(&ours["negative_prompt"]),
    );
    let p = &theirs["params"];
    same("seed", num(&p["seed"]), num(&ours["seed"]));
    same("steps", num(&p["steps"]), num(&ours["steps"]));
    same("cfg", num(&p["cfg_scale"]), num(&ours["cfg"]));
    same("scheduler", text(&p["scheduler"]), text(&ours["scheduler"]));
    same(
        "denoise",
        num(&p["denoise"]).or_else(|| num(&p["strength"])),
        num(&ours["denoise"]),
    );
    // InvokeAI names its scheduler where others name a sampler; sd-parsers
    // takes it as the sampler's name.
    let sampler = if theirs["generator"] == "InvokeAI" {
        "scheduler"
    } else {
        "sampler"
    };
    same("sampler", text(&theirs["sampler"]), text(&ours[sampler]));
    same("model", text(&theirs["model"]), text(&ours["model"]));
    same(
        "model hash",
        text(&theirs["model_hash"]),
        text(&ours["model_hash"]),
    );
    let size = match (ours["width"].as_u64(), ours["height"].as_u64()) {
        (Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    };
    same("size", text(&theirs["size"]), size);
    let tool = match ours["tool"].as_str() {
        Some("Forge") => Some("AUTOMATIC1111".to_string()),
        other => other.map(str::to_string),
    };
    same("tool", text(&theirs["generator"]), tool);
    compared
}

/// Issue 35: PNGs written the way ComfyUI, AUTOMATIC1111, Forge, Fooocus,
/// InvokeAI, SwarmUI and NovelAI write them, and A1111's JPEG and WebP
/// (EXIF through piexif) and Fooocus's JPEG, and the copy NovelAI hides in
/// the alpha channel, alone in a PNG without text chunks
/// (tests/python/tool_pngs.py, each writer following its tool's source) are
/// read by `difflog inspect` to the values they were written with, in one
/// schema; and the independent reader, sd-parsers, agrees with difflog
/// wherever both read a field (it reads all but SwarmUI's and Fooocus's
/// JPEG; the alpha copy when told to look hard).
#[test]
fn other_tools_metadata_is_read_and_agrees_with_sd_parsers() {
    let tmp = tempfile::tempdir().unwrap();
    let o = py(&["tool_pngs.py", tmp.path().to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    assert_eq!(expected.len(), 14);
    let mut files = Vec::new();
    let mut ours = std::collections::BTreeMap::new();
    for (name, want) in expected {
        let file = tmp.path().join(name);
        let got = generation_of(&file);
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{name}: {k} in {got}");
        }
        assert!(got["unresolved"].is_null(), "{name}: {got}");
        files.push(file);
        ours.insert(name.clone(), got);
    }
    let theirs = sd_parsers(&files);
    assert_eq!(theirs["novelai-alpha.png"]["read"], true, "{theirs:?}");
    let mut read = Vec::new();
    for (name, t) in &theirs {
        if t["read"] == true {
            let n = agree_with_sd_parsers(name, t, &ours[name]);
            assert!(n >= 6, "{name}: only {n} fields to compare: {t}");
            read.push(ours[name]["tool"].as_str().unwrap().to_string());
        }
    }
    read.sort();
    read.dedup();
    assert_eq!(
        read,
        [
            "AUTOMATIC1111",
            "ComfyUI",
            "Fooocus",
            "Forge",
            "InvokeAI",
            "NovelAI"
        ]
    );
}

/// Issue 35: XMP as exiv2 writes it (tests/python/xmp_files.py, through
/// pyexiv2) in a PNG, a JPEG and a WebP: `difflog inspect` reads IPTC's
/// digital source type, the creator tool, the default-language title and
/// description and the creators to what exiv2 itself reads back, and says
/// the image was made by a trained model. And exiv2 reads the XMP of
/// difflog's own PNGs (issue 36): IPTC's trainedAlgorithmicMedia, difflog
/// as the creator tool.
#[test]
fn xmp_is_read_as_exiv2_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let o = py(&["xmp_files.py", tmp.path().to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in lines {
        let name = line["file"].as_str().unwrap();
        let theirs = &line["xmp"];
        let (o, ours) = inspect_json(&tmp.path().join(name), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = &ours["xmp"];
        for (field, key) in [
            ("digital_source_type", "Xmp.iptcExt.DigitalSourceType"),
            ("creator_tool", "Xmp.xmp.CreatorTool"),
            ("creator", "Xmp.dc.creator"),
        ] {
            assert_eq!(ours[field], theirs[key], "{name}: {field}");
        }
        for (field, key) in [
            ("description", "Xmp.dc.description"),
            ("title", "Xmp.dc.title"),
        ] {
            assert_eq!(
                ours[field], theirs[key]["lang=\"x-default\""],
                "{name}: {field}"
            );
        }
        let text = Command::new(common::difflog_bin())
            .arg("inspect")
            .arg(tmp.path().join(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("created using a trained model (generative AI)"),
            "{name}: {text}"
        );
    }
    common::test_cache();
    let own = tmp.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    let o = Command::new(common::difflog_bin())
        .args(["generate", "--prompt", "a lighthouse", "--steps", "2"])
        .current_dir(&own)
        .env_remove("DIFFLOG_DIR")
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = common::only_run(&own.join("runs"));
    let view = RunDir::open(&run).unwrap().view();
    let png = run.join(&view.media[0].path);
    let o = py(&["xmp_files.py", "--read", png.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        read["xmp"],
        serde_json::json!({
            "Xmp.iptcExt.DigitalSourceType": difflog::recipe::TRAINED_ALGORITHMIC_MEDIA,
            "Xmp.xmp.CreatorTool": "difflog",
        })
    );
}

/// Issue 35: Content Credentials signed by the CAI's own SDK (c2pa-python,
/// tests/python/c2pa_files.py) under a test CA, offline, in a PNG, JPEG
/// and WebP, a PNG edited from a signed JPEG, and a PNG changed after
/// signing: `difflog inspect --trust ROOT` validates each as c2pa-python
/// does (trusted; invalid for the changed one, its hash binding named) and
/// reads the same signer, claim generator, title, actions with IPTC's
/// digital source type, and ingredients; without the anchor, or with
/// another CA's, intact credentials are only valid.
#[test]
fn content_credentials_are_validated_as_the_cais_own_sdk_validates_them() {
    let tmp = tempfile::tempdir().unwrap();
    let o = py(&["c2pa_files.py", tmp.path().to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inspect = |file: &str, trust: Option<&str>| {
        let anchors = trust.map(|t| tmp.path().join(t));
        let more: Vec<&std::ffi::OsStr> = match &anchors {
            Some(a) => vec!["--trust".as_ref(), a.as_os_str()],
            None => Vec::new(),
        };
        inspect_json(&tmp.path().join(file), &more)
    };
    let mut states = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = theirs["file"].as_str().unwrap();
        let (o, v) = inspect(file, Some("root.pem"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = &v["c2pa"];
        let codes = |v: &serde_json::Value| -> Vec<String> {
            let mut c: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f.as_str().unwrap().split(':').next().unwrap().to_string())
                .collect();
            c.sort();
            c
        };
        assert_eq!(ours["state"], theirs["state"], "{file}: {ours}");
        assert_eq!(
            codes(&ours["failures"]),
            codes(&theirs["failures"]),
            "{file}"
        );
        assert_eq!(ours["title"], theirs["title"], "{file}");
        let generators: Vec<&str> = ours["claim_generator"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap())
            .collect();
        let names = theirs["claim_generator"].as_array().unwrap();
        assert_eq!(generators.len(), names.len(), "{file}: {generators:?}");
        for (g, n) in generators.iter().zip(names) {
            assert!(g.starts_with(n.as_str().unwrap()), "{file}: {g} / {n}");
        }
        let actions: Vec<serde_json::Value> = ours["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| serde_json::json!([a["action"], a["digital_source_type"]]))
            .collect();
        assert_eq!(
            serde_json::Value::from(actions),
            theirs["actions"],
            "{file}"
        );
        let ingredients: Vec<serde_json::Value> = ours["ingredients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| serde_json::json!([i["title"], i["relationship"], i["has_credentials"]]))
            .collect();
        assert_eq!(
            serde_json::Value::from(ingredients),
            theirs["ingredients"],
            "{file}"
        );
        assert_eq!(ours["signer"]["issuer"], theirs["issuer"], "{file}");
        assert_eq!(
            ours["signer"]["common_name"], theirs["common_name"],
            "{file}"
        );
        assert_eq!(
            ours["signer"]["alg"].as_str().map(str::to_lowercase),
            theirs["alg"].as_str().map(str::to_lowercase),
            "{file}"
        );
        states.push((
            file.to_string(),
            theirs["state"].as_str().unwrap().to_string(),
        ));
    }
    states.sort();
    assert_eq!(
        states,
        [
            ("created.jpg", "trusted"),
            ("created.png", "trusted"),
            ("created.webp", "trusted"),
            ("edited.png", "trusted"),
            ("tampered.png", "invalid"),
        ]
        .map(|(f, s)| (f.to_string(), s.to_string()))
    );
    for trust in [None, Some("other-root.pem")] {
        let (_, v) = inspect("created.jpg", trust);
        assert_eq!(v["c2pa"]["state"], "valid", "{trust:?}: {v}");
        assert!(v["c2pa"]["failures"][0]
            .as_str()
            .unwrap()
            .starts_with("signingCredential.untrusted"));
    }
    let text = |file: &str| {
        let o = Command::new(common::difflog_bin())
            .arg("inspect")
            .arg(tmp.path().join(file))
            .arg("--trust")
            .arg(tmp.path().join("root.pem"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(text("created.png").contains("Content Credentials (C2PA): TRUSTED"));
    assert!(text("tampered.png").contains("Content Credentials (C2PA): INVALID"));
    // A trust file that is no PEM of certificates is refused, named.
    let (o, _) = inspect("created.png", Some("created.jpg"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("created.jpg"));
}

/// `difflog import …` with `args`, its JSON report.
fn import(args: &[&str], root: &Path) -> (std::process::ExitStatus, serde_json::Value, String) {
    let o = Command::new(common::difflog_bin())
        .arg("import")
        .args(args)
        .args(["--json", "--root"])
        .arg(root)
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status, v, String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Issue 35: a folder of other tools' images becomes a run: one call per
/// batch (ComfyUI's batch of two is one call; so are A1111's JPEG and WebP
/// of one setting), one row per image with its prompt and seed, each file
/// — PNG, JPEG or WebP — kept byte for byte; a broken or cut-short file is
/// named and skipped, a link is not followed; importing again adds nothing,
/// a new file makes a run of its own; `--from` takes one tool's images.
#[test]
fn a_tools_output_folder_is_imported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("outputs");
    let o = py(&["tool_pngs.py", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(out.join("expected.json")).unwrap();
    std::fs::write(out.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let jpeg = std::fs::read(out.join("00002-987654321.jpg")).unwrap();
    std::fs::write(out.join("cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let outside = tmp.path().join("outside.png");
    std::fs::copy(out.join("novelai.png"), &outside).unwrap();
    std::fs::remove_file(out.join("novelai.png")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("link.png")).unwrap();
    let root = tmp.path().join("runs");
    let dir = out.to_str().unwrap();
    // Files are taken by modification time: a second apart in name order
    // here (written in one burst, some would share a clock tick).
    let mut names: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.is_symlink())
        .collect();
    names.sort();
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (i, p) in names.iter().enumerate() {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(start + std::time::Duration::from_secs(i as u64))
            .unwrap();
    }

    let (status, r, err) = import(&[dir], &root);
    assert!(status.success(), "{err}");
    assert_eq!(
        (r["imported"].as_u64(), r["calls"].as_u64()),
        (Some(13), Some(11)),
        "{r}"
    );
    let unreadable = r["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 2, "{r}");
    assert!(
        unreadable[0][0].as_str().unwrap().ends_with("broken.png"),
        "{r}"
    );
    assert!(
        unreadable[1][0].as_str().unwrap().ends_with("cut.jpg")
            && unreadable[1][1].as_str().unwrap().contains("cut short"),
        "{r}"
    );
    let run = PathBuf::from(r["run_dir"].as_str().unwrap());
    let o = Command::new(common::difflog_bin())
        .arg("verify")
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let read = RunDir::open(&run).unwrap();
    let view = read.view();
    // Every file byte for byte: its SHA-256 is a media digest of the run.
    let digests: std::collections::HashSet<String> =
        view.media.iter().map(|m| m.digest.clone()).collect();
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["broken", "link", "cut", "expected"]
            .iter()
            .any(|n| name.starts_with(n))
        {
            continue;
        }
        let sha = difflog::format::sha256_hex(&std::fs::read(e.path()).unwrap());
        assert!(digests.contains(&sha), "{name} not stored as it is");
    }
    assert!(!digests.contains(&difflog::format::sha256_hex(
        &std::fs::read(&outside).unwrap()
    )));
    // JPEG and WebP kept as they are, under their own extensions.
    let formats: std::collections::BTreeSet<&str> =
        view.media.iter().map(|m| m.format.as_str()).collect();
    assert_eq!(formats, ["jpg", "png", "webp"].into(), "{formats:?}");
    // The batches: ComfyUI's (seed 77 each) and A1111's JPEG and WebP of
    // one setting (seed 987654321 each).
    let batch: Vec<_> = view.calls.values().filter(|c| c.rows.len() == 2).collect();
    assert_eq!(batch.len(), 2);
    for (call, want) in batch.iter().zip([987654321, 77]) {
        for row in &call.rows {
            let seed = row.cells.iter().find_map(|c| match c {
                Cell::Number { column, value } if column == "Seed" => value.as_u64(),
                _ => None,
            });
            assert_eq!(seed, Some(want));
        }
    }

    // compare takes the run like any other: the tools' settings as axes.
    let o = Command::new(common::difflog_bin())
        .arg("compare")
        .arg(&run)
        .args(["--rows", "sampler", "--cols", "steps", "-o"])
        .arg(tmp.path().join("page"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(tmp.path().join("page/index.html")).unwrap();
    assert!(
        page.contains("dpmpp_2m_sde_gpu") && page.contains("28"),
        "sampler and steps axes"
    );

    // report shows them (thumbnails made from the JPEG and WebP too), and
    // links the files as they are.
    let o = Command::new(common::difflog_bin())
        .arg("report")
        .arg(&run)
        .args(["--self-contained", "-o"])
        .arg(tmp.path().join("report"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(tmp.path().join("report/index.html")).unwrap();
    assert!(
        page.contains(".jpg") && page.contains(".webp"),
        "JPEG / WebP not linked"
    );
    // MLflow gets the JPEG and WebP as they are, referenced from the
    // tables, and reads back complete.
    let sync = |cmd: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .arg(cmd)
            .arg(&run)
            .args(["--to", &mf::target()])
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sync("upload");
    sync("verify");
    let remote = mf::run_for("import", &read.meta.id);
    let mut tables = String::new();
    for (path, _) in mf::artifacts(&remote) {
        if path.starts_with("Result-Table/") {
            tables.push_str(&String::from_utf8_lossy(&mf::artifact(&remote, &path)));
        }
    }
    for m in view.media.iter().filter(|m| m.format != "png") {
        let name = format!("images/{}.{}", m.digest, m.format);
        assert_eq!(
            mf::artifact(&remote, &name),
            std::fs::read(run.join(&m.path)).unwrap(),
            "{name}"
        );
        assert!(tables.contains(&name), "no table cell points at {name}");
    }

    let (status, r, err) = import(&[dir], &root);
    assert!(status.success(), "{err}");
    assert!(r["run_dir"].is_null(), "{r}");
    assert_eq!(r["already_imported"].as_u64(), Some(13), "{r}");

    let plain = difflog::bench::natural_image(1, 32);
    std::fs::write(
        out.join("new.png"),
        difflog::run::media::encode_png(&plain).unwrap(),
    )
    .unwrap();
    let (status, r, err) = import(&[dir], &root);
    assert!(status.success(), "{err}");
    assert_eq!(
        (r["imported"].as_u64(), r["without_metadata"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );

    let (status, r, err) = import(&["--from", "comfyui", dir], &tmp.path().join("comfy"));
    assert!(status.success(), "{err}");
    assert_eq!(
        (r["imported"].as_u64(), r["calls"].as_u64()),
        (Some(4), Some(3)),
        "{r}"
    );
    assert_eq!(r["other_tool"].as_u64(), Some(9), "{r}");

    let (status, _, err) = import(&["--from", "photoshop", dir], &root);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--from photoshop"), "{err}");
    // Runs recorded inside the folder would be imported in turn: refused.
    let (status, _, err) = import(&[dir], &out.join("runs"));
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("inside the folder imported"), "{err}");
    assert!(!out.join("runs").exists());
}

/// The rows of each call of the one run under `root` (none yet: empty).
fn rows_per_call(root: &Path) -> Vec<usize> {
    let Ok(runs) = difflog::read::find_runs(root) else {
        return Vec::new();
    };
    assert!(runs.len() <= 1, "more than one run: {runs:?}");
    runs.first()
        .and_then(|r| RunDir::open(r).ok())
        .map(|r| r.view().calls.values().map(|c| c.rows.len()).collect())
        .unwrap_or_default()
}

/// Issue 35: `difflog-sync watch --import comfyui:FOLDER` follows a ComfyUI
/// output folder as it fills: what is there at start and each image saved
/// later become rows of one live run (ComfyUI's batch of two one call), a
/// file still being written waits until it is whole, another tool's image
/// is left out, and the run reaches the real MLflow server call by call
/// while it is live; stopping watch finishes the run.
#[test]
fn watch_import_follows_a_comfyui_folder_into_one_live_run_on_mlflow() {
    let tmp = tempfile::tempdir().unwrap();
    let made = tmp.path().join("made");
    let o = py(&["tool_pngs.py", made.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("ComfyUI/output");
    std::fs::create_dir_all(&out).unwrap();
    let root = tmp.path().join("runs");
    let place = |name: &str| {
        std::fs::copy(made.join(name), out.join(name)).unwrap();
    };
    place("ComfyUI_00001_.png");
    let mut daemon = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
            .arg("watch")
            .arg(&root)
            .args(["--to", &mf::target(), "--import"])
            .arg(format!("comfyui:{}", out.display()))
            .env_remove("MLFLOW_TRACKING_TOKEN")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .env_remove("DIFFLOG_MODE")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        common::wait_for(what, Duration::from_secs(60), f);
    };
    wait_for("the file there at start", &|| rows_per_call(&root) == [1]);
    let run = common::only_run(&root);
    let id = RunDir::open(&run).unwrap().meta.id;
    wait_for("call 1 on MLflow", &|| mf::tables("import", &id) == 1);
    assert_eq!(mf::run_for("import", &id)["info"]["status"], "RUNNING");

    // Half a file, as a tool writing it leaves it for a moment: not taken.
    let whole = std::fs::read(made.join("ComfyUI_00002_.png")).unwrap();
    let half = whole.len() / 2;
    std::fs::write(out.join("ComfyUI_00002_.png"), &whole[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rows_per_call(&root), [1], "half a PNG was imported");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("ComfyUI_00002_.png"))
        .unwrap();
    std::io::Write::write_all(&mut f, &whole[half..]).unwrap();
    drop(f);
    wait_for("the file once whole", &|| rows_per_call(&root) == [1, 1]);
    // A batch of two, and an A1111 image dropped in (not ComfyUI's).
    for name in ["ComfyUI_00003_.png", "ComfyUI_00004_.png", "00001-42.png"] {
        place(name);
    }
    wait_for("the batch", &|| rows_per_call(&root) == [1, 1, 2]);
    wait_for("call 3 on MLflow", &|| mf::tables("import", &id) == 3);
    assert_eq!(mf::run_for("import", &id)["info"]["status"], "RUNNING");
    let view = RunDir::open(&run).unwrap().view();
    let digests: std::collections::HashSet<String> =
        view.media.iter().map(|m| m.digest.clone()).collect();
    for n in 1..=4 {
        let name = format!("ComfyUI_0000{n}_.png");
        let sha = difflog::format::sha256_hex(&std::fs::read(made.join(&name)).unwrap());
        assert!(digests.contains(&sha), "{name} not stored byte for byte");
    }
    assert_eq!(digests.len(), 4, "the A1111 image was imported");

    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "watch did not stop cleanly: {status}");
    assert_eq!(
        RunDir::open(&run).unwrap().state(),
        difflog::read::RunState::Finished,
        "the import run was not finished"
    );
    // The next upload carries the end of the run to the server.
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .arg("upload")
        .arg(&root)
        .args(["--to", &mf::target()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mf::run_for("import", &id)["info"]["status"], "FINISHED");
}

/// Issue 35: sd-parsers reads difflog's own PNGs back to what was recorded:
/// prompt, negative prompt, seed, steps, sampler, CFG and size.
#[test]
fn sd_parsers_reads_difflogs_own_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    common::test_cache();
    let o = Command::new(common::difflog_bin())
        .args([
            "generate",
            "--prompt",
            "a red circle, on the left",
            "--negative-prompt",
            "blurry",
        ])
        .args(["--steps", "3", "--seed", "11", "--guidance-scale", "6.5"])
        .env("DIFFLOG_DIR", tmp.path())
        .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
        .env_remove("DIFFLOG_MODE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = common::only_run(tmp.path());
    let mut pngs: Vec<PathBuf> = Vec::new();
    let mut stack = vec![run.join("media")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "png") {
                pngs.push(e.path());
            }
        }
    }
    assert_eq!(pngs.len(), 1);
    let ours = generation_of(&pngs[0]);
    assert_eq!(ours["tool"], "difflog");
    assert_eq!(ours["prompt"], "a red circle, on the left");
    assert_eq!(ours["negative_prompt"], "blurry");
    assert_eq!(
        (ours["seed"].as_u64(), ours["steps"].as_u64()),
        (Some(11), Some(3))
    );
    assert_eq!(ours["cfg"].as_f64(), Some(6.5));
    let name = pngs[0].file_name().unwrap().to_string_lossy().into_owned();
    let theirs = &sd_parsers(&pngs)[&name];
    assert_eq!(theirs["generator"], "AUTOMATIC1111", "{theirs}");
    let mut ours = ours.clone();
    ours["tool"] = "AUTOMATIC1111".into();
    // difflog's model hash and name are in its parameters text too.
    let n = agree_with_sd_parsers(&name, theirs, &ours);
    assert!(n >= 8, "only {n} fields compared: {theirs}");
    for field in ["seed", "steps", "cfg_scale"] {
        assert!(
            !theirs["params"][field].is_null(),
            "sd-parsers did not read {field}: {theirs}"
        );
    }
    assert!(
        theirs["sampler"].is_string() && theirs["size"].is_string(),
        "{theirs}"
    );
}

/// Issue 38: on natural-looking images difflog's compact PNG encoding is
/// no larger than PIL's default for the same pixels (what W&B's client and
/// diffusers users write), ~20 % smaller than the fast encoding, and PIL
/// reads every compact PNG back to its pixels (`bench png` checks that
/// through the Python it is given, and fails otherwise).
#[test]
fn compact_pngs_are_no_larger_than_pils_and_pil_reads_them() {
    let o = Command::new(common::difflog_bin())
        .args([
            "bench", "png", "--count", "6", "--size", "256", "--json", "--python",
        ])
        .arg(python())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let over_pil = v["compact_over_pil"].as_f64().unwrap();
    let over_fast = v["compact_over_fast"].as_f64().unwrap();
    eprintln!("compact / PIL bytes {over_pil:.3}, compact / fast bytes {over_fast:.3}");
    assert!(over_pil <= 1.0, "{v}");
    assert!(over_fast < 0.9, "{v}");
}

/// Issue 33: difflog's Rust port of torch's CPU generator and `torch.randn`
/// (src/pipelines/parts/torch_rng.rs) draws what torch draws, bit for bit:
/// every seed, count (around the 16-value block and its redrawn tail, up to
/// a 64×64 latent), dtype, a stream drawn in turn, and a recorded state
/// restored; the state after each draw is torch's byte for byte.
#[test]
fn the_rust_torch_generator_draws_what_torch_draws() {
    use difflog::pipelines::parts::torch_rng::{Dtype, TorchGenerator};
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("torch.json");
    let o = py(&["torch_randn_dump.py", dump.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    let vector = v["vector"].as_bool().unwrap();
    let hex = |s: &serde_json::Value| {
        let s = s.as_str().unwrap();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let (mut compared, mut values) = (0, 0);
    for case in v["cases"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap();
        let mut g = TorchGenerator::new(seed);
        for (i, d) in case["draws"].as_array().unwrap().iter().enumerate() {
            if case.get("restored_state").is_some() && i == 1 {
                let s = hex(&case["restored_state"]);
                assert_eq!(g.state(), s, "seed {seed}: the state before draw {i}");
                g = TorchGenerator::from_state(&s).unwrap();
            }
            let n = d["n"].as_u64().unwrap() as usize;
            let dtype = d["dtype"].as_str().unwrap();
            let got: Vec<u8> = match dtype {
                "float32" => g
                    .randn_as(n, Dtype::F32)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                "float16" => g
                    .randn_as(n, Dtype::F16)
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                _ => g
                    .randn_as(n, Dtype::Bf16)
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            };
            if n >= 16 && !vector {
                // torch's vectorized kernel here is not the AVX2 one.
                continue;
            }
            let want = hex(&d["bits"]);
            let width = want.len() / n;
            let differ = got
                .chunks(width)
                .zip(want.chunks(width))
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "seed {seed}, draw {i}: {differ} of {n} {dtype} values differ"
            );
            assert_eq!(
                g.state(),
                hex(&d["state"]),
                "seed {seed}, draw {i}: the state after it"
            );
            compared += 1;
            values += n;
        }
    }
    eprintln!(
        "torch {}: {compared} draws, {values} values, bit for bit (AVX2 kernel compared: {vector})",
        v["torch"]
    );
    assert!(compared >= 40, "only {compared} draws compared");
}

/// Issue 33: a run recorded from Python is re-made by `difflog replay` on
/// candle, and one made by `difflog generate --rng torch-cpu` by
/// `difflog.remake` in diffusers, the pixels within one level of 255: SD,
/// FLUX.1 (schnell- and dev-shaped) and SD3 (with and without skip-layer
/// guidance).
#[test]
fn runs_recorded_on_either_side_are_remade_on_the_other() {
    common::test_cache();
    use difflog::pipelines::tiny::{ensure, TinyModel};
    let [sd, flux, flux_dev, sd3] = [
        TinyModel::Sd,
        TinyModel::Flux,
        TinyModel::FluxDev,
        TinyModel::Sd3,
    ]
    .map(|m| ensure(m).unwrap());
    let o = py(
        &["-m", "unittest", "-v", "test_cross"],
        &[
            ("DIFFLOG_TINY_SD", &sd),
            ("DIFFLOG_TINY_FLUX", &flux),
            ("DIFFLOG_TINY_FLUX_DEV", &flux_dev),
            ("DIFFLOG_TINY_SD3", &sd3),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "test_cross failed:\n{err}");
    assert!(err.contains("\nOK"), "no unittest verdict:\n{err}");
}

#[test]
fn the_stubs_say_what_the_extension_is() {
    // Issue 31: _native.pyi against the built extension (names, kinds,
    // parameters), so the stubs mypy reads cannot drift from the binding.
    unittest("test_stubs.Stubs");
}

#[test]
fn the_package_type_checks() {
    // The API is typed inline (py.typed) and the extension in _native.pyi:
    // mypy checks that the two agree with the code that uses them (its
    // settings: python/pyproject.toml).
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let o = Command::new(python())
        .args(["-m", "mypy", "difflog"])
        .current_dir(&pkg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "mypy: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

const LOOP: &str = "
import difflog, tiny, torch
torch.set_num_threads(1)
run = difflog.autolog(init=dict(project='kill'))
print(run.dir, flush=True)
pipe = tiny.sd()
i = 0
while True:
    pipe(f'a cat {i}', num_images_per_prompt=2, height=32, width=32, num_inference_steps=1)
    print('call', i, flush=True)
    i += 1
";

#[test]
fn a_python_process_killed_mid_run_leaves_a_run_that_verify_accepts() {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(python())
        .args(["-c", LOOP])
        .current_dir(here())
        .env("PYTHONPATH", here())
        .env("DIFFLOG_DIR", root.path())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let dir = PathBuf::from(lines.next().unwrap().unwrap());
    // When each call's return was seen; the kill comes LAG after the third.
    const LAG: Duration = Duration::from_secs(2);
    let mut returned = Vec::new();
    for line in lines {
        if line.unwrap().starts_with("call ") {
            returned.push(Instant::now());
            if returned.len() >= 3 && returned[2].elapsed() >= LAG {
                break;
            }
        }
    }
    // Killed while a later call runs (or its images are being written).
    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    let o = Command::new(common::difflog_bin())
        .arg("verify")
        .arg(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "verify refused the killed run: {out}");
    let run = RunDir::open(&dir).unwrap();
    let view = run.view();
    assert!(view.finished.is_none());
    // Records reach the disk in the background, a call's soon after it
    // returned (a file system busy with other writes is not waited for:
    // issue 38's group syncs fall back to syncing each file). Every call
    // that returned LAG before the kill is on disk, whole.
    let done: Vec<_> = view
        .calls
        .values()
        .filter(|c| c.finished.is_some())
        .collect();
    let old = returned
        .iter()
        .filter(|t| killed.duration_since(**t) >= LAG)
        .count();
    assert!(old >= 3);
    assert!(
        done.len() >= old,
        "{} calls finished of {old} that returned {LAG:?} before the kill ({} returned)",
        done.len(),
        returned.len()
    );
    for c in &done {
        assert_eq!(c.rows.len(), 2);
    }

    // Issue 34 (3): the job starts again and resumes the run by its id.
    let id = run.meta.id.clone();
    let calls_before = view.calls.len();
    let o = py(
        &["-c", RESUME, &id, dir.to_str().unwrap()],
        &[("DIFFLOG_DIR", root.path())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = RunDir::open(&dir).unwrap();
    let view = run.view();
    assert!(view.finished.is_some());
    assert_eq!(view.calls.len(), calls_before + 1);
    let last = view.calls.values().last().unwrap();
    assert!(last.finished.is_some());
    assert_eq!(last.rows.len(), 1);
    assert!(run
        .records()
        .iter()
        .any(|r| matches!(r.event, difflog::event::Event::RunResumed(_))));
    assert_eq!(common::only_run(root.path()), dir);
    let o = Command::new(common::difflog_bin())
        .arg("verify")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

const RESUME: &str = "
import difflog, tiny, torch, sys
torch.set_num_threads(1)
run = difflog.autolog(init=dict(project='kill', resume=sys.argv[1]))
assert run.dir == sys.argv[2], (run.dir, sys.argv[2])
tiny.sd()('after the kill', height=32, width=32, num_inference_steps=1)
difflog.finish()
";

const RECORD: &str = "
import difflog, tiny, torch, sys
from PIL import Image
run = difflog.autolog(init=dict(project=sys.argv[1], tags=['python']))
tiny.sd()(['a cat', 'a dog'], height=32, width=32, num_inference_steps=2)
src = Image.new('RGB', (32, 32), (200, 30, 30))
tiny.img2img()('a red cat', image=src, strength=0.9, num_inference_steps=2)
difflog.finish()
print(run.dir)
";

#[test]
fn a_python_recorded_run_uploads_to_mlflow() {
    let project = mf::unique_project("python");
    let root = tempfile::tempdir().unwrap();
    let o = py(&["-c", RECORD, &project], &[("DIFFLOG_DIR", root.path())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            &mf::target(),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 uploaded, 0 failed"), "{out}");
    let view = RunDir::open(&dir).unwrap().view();
    let runs = mf::runs(&project);
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(
        mf::param(run, "pipeline.2.class").as_deref(),
        Some("StableDiffusionImg2ImgPipeline")
    );
    let arts: Vec<String> = mf::artifacts(run).into_iter().map(|(p, _)| p).collect();
    for m in &view.media {
        let bytes = mf::artifact(run, &format!("images/{}.png", m.digest));
        assert_eq!(difflog::format::sha256_hex(&bytes), m.digest);
    }
    for call in view.calls.values() {
        let path = format!("Result-Table/{}.json", call.started.stage);
        assert!(arts.contains(&path), "{path} missing: {arts:?}");
        let table: serde_json::Value = serde_json::from_slice(&mf::artifact(run, &path)).unwrap();
        assert_eq!(table["columns"], serde_json::json!(call.started.columns));
        let data = table["data"].as_array().unwrap();
        assert_eq!(data.len(), call.rows.len());
        for (row, cells) in call.rows.iter().zip(data) {
            for (i, c) in row.cells.iter().enumerate() {
                if let Cell::Image { digest, .. } = c {
                    assert_eq!(cells[i]["filepath"], format!("images/{digest}.png"));
                }
            }
        }
    }
    assert_eq!(view.calls.len(), 2);
    assert_eq!(
        view.calls[&2].started.columns,
        [
            "Source-Image",
            "Prompt",
            "Negative-Prompt",
            "Generated-Image",
            "Seed",
            "Remake"
        ]
    );
}

#[test]
fn a_python_recorded_run_uploads_to_wandb_with_inputs_only_in_tables() {
    const KEY: &str = "0123456789abcdef-test-key-do-not-leak";
    let emu = common::wandb::Emulator::start(KEY, "team");
    let root = tempfile::tempdir().unwrap();
    let o = py(&["-c", RECORD, "pyw"], &[("DIFFLOG_DIR", root.path())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_difflog-sync"))
        .args([
            "upload",
            root.path().to_str().unwrap(),
            "--to",
            "wandb://team/pyw",
        ])
        .env("WANDB_BASE_URL", &emu.url)
        .env("WANDB_API_KEY", KEY)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    assert!(emu.violations().is_empty(), "{:?}", emu.violations());
    let runs = emu.runs("pyw");
    assert_eq!(runs.len(), 1);
    let keys: std::collections::BTreeSet<String> = runs[0]
        .history
        .iter()
        .filter_map(|l| l.as_object())
        .flat_map(|l| l.keys().cloned())
        .collect();
    for k in [
        "Generated-Image/Pipeline-Call-1",
        "Generated-Image/Pipeline-Call-2",
        "Result-Table/Pipeline-Call-1",
        "Result-Table/Pipeline-Call-2",
    ] {
        assert!(keys.contains(k), "{k} missing from the history: {keys:?}");
    }
    // As autolog shows an image-to-image call: the source image in the
    // table's cells, not as a media panel of its own.
    assert!(
        !keys.iter().any(|k| k.starts_with("Source-Image")),
        "{keys:?}"
    );
    assert_eq!(emu.artifacts("pyw").len(), 2);
}

/// `difflog` with `args`, runs under `root` and the test model cache.
fn difflog_in(root: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    common::test_cache();
    Command::new(common::difflog_bin())
        .args(args)
        .env("DIFFLOG_DIR", root)
        .env("DIFFLOG_CACHE", std::env::var("DIFFLOG_CACHE").unwrap())
        .env_remove("DIFFLOG_MODE")
        .env_remove("DIFFLOG_PROVENANCE")
        .output()
        .unwrap()
}

/// Issue 36: with a provenance configuration (an ES256 key and chain
/// under a test CA made as c2pa_files.py makes one, and a watermark text),
/// every image difflog generates — text to image, and image to image from
/// one of them — carries a manifest that the CAI's own SDK (c2pa-python)
/// validates as trusted, stating difflog, the model and the recipe's
/// digest (and, for the edit, the input file with its own credentials as
/// its parent ingredient), and a watermark that the `invisible-watermark` package (what
/// diffusers' SDXL pipelines use) decodes to the message; `inspect`,
/// `verify --provenance` and `replay` agree. A changed byte breaks the
/// manifest for both readers; a resized copy keeps neither mark. Bad
/// configurations are refused by name before anything is recorded.
#[test]
fn generated_images_carry_marks_that_the_cais_sdk_and_invisible_watermark_accept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let o = py(&["provenance_oracle.py", "ca", dir.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = dir.join("provenance.toml");
    std::fs::write(
        &config,
        "[sign]\ncertificate_chain = \"chain.pem\"\nprivate_key = \"key.pem\"\n\n\
         [watermark]\ntext = \"difflog test\"\n",
    )
    .unwrap();
    let message = difflog::provenance::watermark::Message::from_text("difflog test").unwrap();
    let bits = message.as_bits();
    let runs = dir.join("runs");
    let os = |s: &str| std::ffi::OsString::from(s);
    let generate = |more: &[&str]| {
        let mut args = vec![os("generate"), os("--provenance"), config.clone().into()];
        args.extend(["--width", "256", "--height", "256", "--steps", "2"].map(os));
        args.extend(more.iter().map(|s| os(s)));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let o = difflog_in(&runs, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    generate(&[
        "--prompt",
        "a red circle on the left",
        "--prompt",
        "a blue square",
    ]);
    let first = common::only_run(&runs);
    let view = RunDir::open(&first).unwrap().view();
    let made: Vec<PathBuf> = view.media.iter().map(|m| first.join(&m.path)).collect();
    assert_eq!(made.len(), 2);
    for m in &view.media {
        let marks = m.provenance.as_ref().expect("marks recorded");
        assert_eq!(
            marks.c2pa.as_deref(),
            Some("difflog test signer, Difflog Test")
        );
        assert_eq!(marks.watermark.as_ref().unwrap().bits, bits);
    }
    generate(&[
        "--prompt",
        "make it green",
        "--image",
        made[0].to_str().unwrap(),
        "--strength",
        "0.5",
    ]);
    let edited_run = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| *p != first)
        .unwrap();
    let edited_view = RunDir::open(&edited_run).unwrap().view();
    let edited = edited_view
        .media
        .iter()
        .find(|m| m.key.starts_with("Generated-Image/"))
        .map(|m| edited_run.join(&m.path))
        .unwrap();

    // The oracles.
    let root_pem = dir.join("root.pem");
    let mut args = vec![
        "provenance_oracle.py".to_string(),
        "check".into(),
        root_pem.to_str().unwrap().into(),
        bits.len().to_string(),
    ];
    args.extend(
        made.iter()
            .chain([&edited])
            .map(|p| p.to_str().unwrap().to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = py(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), 3);
    for (file, t) in made.iter().chain([&edited]).zip(&theirs) {
        let c = &t["c2pa"];
        assert_eq!(c["state"], "trusted", "{file:?}: {t}");
        assert_eq!(c["common_name"], "difflog test signer");
        assert_eq!(c["claim_generator"], serde_json::json!(["difflog"]));
        assert_eq!(
            t["watermark"],
            bits.as_str(),
            "{file:?}: the package decodes"
        );
        // The recipe the manifest states is the one the file carries.
        let chunks = difflog::recipe::read_text_chunks(&std::fs::read(file).unwrap()).unwrap();
        let recipe = &chunks.iter().find(|c| c.0 == "difflog").unwrap().1;
        assert_eq!(
            c["recipe"]["recipe_sha256"].as_str().unwrap(),
            difflog::format::sha256_hex(recipe.as_bytes())
        );
        let agent = &c["software_agents"].as_array().unwrap().last().unwrap();
        assert_eq!(agent["name"], "difflog");
        assert_eq!(agent["org.difflog.model"], "tiny-shapes");
    }
    let trained = difflog::recipe::TRAINED_ALGORITHMIC_MEDIA;
    assert_eq!(
        theirs[0]["c2pa"]["actions"],
        serde_json::json!([["c2pa.created", trained]])
    );
    assert_eq!(
        theirs[2]["c2pa"]["actions"],
        serde_json::json!([["c2pa.opened", null], ["c2pa.edited", trained]])
    );
    // The input file is the parent ingredient, its own credentials kept.
    let input_name = made[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(
        theirs[2]["c2pa"]["ingredients"],
        serde_json::json!([[input_name, "parentOf", true]])
    );

    // difflog's own readers agree.
    let (o, v) = inspect_json(
        &made[0],
        &[
            "--trust".as_ref(),
            root_pem.as_os_str(),
            "--run".as_ref(),
            first.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(v["c2pa"]["state"], "trusted");
    let found: Vec<(String, bool)> = v["watermarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["found"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("diffusers SDXL".to_string(), false),
            ("recorded".to_string(), true)
        ]
    );
    let o = difflog_in(
        &runs,
        &[
            "verify".as_ref(),
            runs.as_os_str(),
            "--provenance".as_ref(),
            "--trust".as_ref(),
            root_pem.as_os_str(),
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(said.contains("2 generated image(s): 2 with a C2PA manifest, 2 with their watermark, every recorded mark intact"), "{said}");
    let o = difflog_in(
        &runs,
        &[
            "replay".as_ref(),
            first.as_os_str(),
            "--call".as_ref(),
            "1".as_ref(),
        ],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{said}");
    assert!(
        said.contains("identical but for its C2PA manifest"),
        "{said}"
    );
    assert!(said.contains("2/2 image(s) byte-identical"), "{said}");

    // Edited copies: one byte changed, and resized.
    let edits = dir.join("edits");
    std::fs::create_dir_all(&edits).unwrap();
    let o = py(
        &[
            "provenance_oracle.py",
            "edit",
            made[0].to_str().unwrap(),
            edits.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (tampered, resized) = (edits.join("tampered.png"), edits.join("resized.png"));
    let o = py(
        &[
            "provenance_oracle.py",
            "check",
            root_pem.to_str().unwrap(),
            &bits.len().to_string(),
            tampered.to_str().unwrap(),
            resized.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs[0]["c2pa"]["state"], "invalid", "{}", theirs[0]);
    let (_, v) = inspect_json(&tampered, &["--trust".as_ref(), root_pem.as_os_str()]);
    assert_eq!(v["c2pa"]["state"], "invalid", "{v}");
    assert_eq!(theirs[1]["c2pa"], serde_json::Value::Null);
    assert_ne!(
        theirs[1]["watermark"],
        bits.as_str(),
        "the package: resized, no mark"
    );
    let given = format!("bits:{bits}");
    let (_, v) = inspect_json(&resized, &["--watermark".as_ref(), given.as_ref()]);
    assert_eq!(v["c2pa"], serde_json::Value::Null);
    assert_eq!(v["watermarks"][1]["found"], false, "{v}");

    // Refused before anything is recorded: a key others may read, a key
    // that is not the certificate's, a section nobody knows.
    let before = std::fs::read_dir(&runs).unwrap().count();
    let refused = |text: &str, key_mode: u32, expect: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("key.pem"),
            std::fs::Permissions::from_mode(key_mode),
        )
        .unwrap();
        std::fs::write(&config, text).unwrap();
        let o = difflog_in(
            &runs,
            &[
                "generate".as_ref(),
                "--prompt".as_ref(),
                "x".as_ref(),
                "--provenance".as_ref(),
                config.as_os_str(),
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(expect), "{expect}: {err}");
    };
    let sign = "[sign]\ncertificate_chain = \"chain.pem\"\nprivate_key = \"key.pem\"\n";
    refused(sign, 0o644, "chmod 600");
    let o = py(
        &[
            "provenance_oracle.py",
            "ca",
            dir.join("other").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success());
    refused(
        "[sign]\ncertificate_chain = \"chain.pem\"\nprivate_key = \"other/key.pem\"\n",
        0o600,
        "cannot sign with it",
    );
    refused("[signing]\n", 0o600, "unknown section [signing]");
    refused(
        "[watermark]\nbits = \"012\"\n",
        0o600,
        "watermark bits are 0 and 1",
    );
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), before);
}

const MARKED: &str = "
import difflog, tiny, torch, numpy as np
torch.set_num_threads(1)
pipe = tiny.sd()
def call():
    g = torch.Generator().manual_seed(3)
    return pipe('a red circle', height=256, width=256, num_inference_steps=1, generator=g).images[0]
plain = np.asarray(call())
run = difflog.autolog(init=dict(project='marks'))
marked = np.asarray(call())
difflog.finish()
assert (plain == marked).all(), 'recording changed the image the program got'
print(run.dir, flush=True)
";

/// Issue 36 from Python: with DIFFLOG_PROVENANCE naming a watermark, a
/// diffusers call's stored image carries it — the `invisible-watermark`
/// package decodes it, the media record names its bits — while the image
/// the program gets back is the one it gets without recording; with a
/// signer as well, the stored image also carries a C2PA manifest that the
/// CAI's own SDK finds intact and trusted under the test CA — an image
/// made without a seed (so without a recipe) too, and an image-to-image or
/// inpainting image names its input (and mask) as ingredients.
#[test]
fn python_recorded_images_carry_the_configured_watermark_and_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("marks.toml");
    std::fs::write(&config, "[watermark]\ntext = \"py\"\n").unwrap();
    let root = tmp.path().join("runs");
    let env = [
        ("DIFFLOG_DIR", root.as_path()),
        ("DIFFLOG_PROVENANCE", config.as_path()),
    ];
    let o = py(&["-c", MARKED], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let view = RunDir::open(&run).unwrap().view();
    let image = view
        .media
        .iter()
        .find(|m| m.key.starts_with("Generated-Image/"))
        .unwrap();
    let bits = difflog::provenance::watermark::Message::from_text("py")
        .unwrap()
        .as_bits();
    let marks = image.provenance.as_ref().expect("marks recorded");
    assert_eq!(marks.watermark.as_ref().unwrap().bits, bits);
    assert_eq!(marks.c2pa, None);
    let no_anchors = tmp.path().join("none.pem");
    std::fs::write(&no_anchors, "").unwrap();
    let file = run.join(&image.path);
    let o = py(
        &[
            "provenance_oracle.py",
            "check",
            no_anchors.to_str().unwrap(),
            &bits.len().to_string(),
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(theirs["watermark"], bits.as_str(), "{theirs}");
    assert_eq!(theirs["c2pa"], serde_json::Value::Null);

    // Signed too: the CAI's SDK finds the manifest intact under the test CA.
    let o = py(
        &["provenance_oracle.py", "ca", tmp.path().to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        &config,
        "[sign]\ncertificate_chain = \"chain.pem\"\nprivate_key = \"key.pem\"\n\n\
         [watermark]\ntext = \"py\"\n",
    )
    .unwrap();
    // And, in a run of their own, an image-to-image call of two images
    // from pixels alone, given no seed (so no recipe: the manifest states
    // the run, call and row without one), then a seeded inpainting call:
    // each names the input as the run stores it as its parent ingredient,
    // and the inpainting image its mask as an `inputTo` ingredient.
    let script = format!(
        "{MARKED}\n\
         from PIL import Image\n\
         run = difflog.autolog(init=dict(project='marks'))\n\
         src = Image.new('RGB', (256, 256), (200, 30, 30))\n\
         tiny.img2img()('a red cat', image=src, strength=0.9, num_inference_steps=2, \
         num_images_per_prompt=2)\n\
         mask = Image.new('L', (256, 256), 0)\n\
         mask.paste(255, (64, 64, 192, 192))\n\
         tiny.inpaint()('a blue cat', image=src, mask_image=mask, height=256, width=256, \
         num_inference_steps=2, generator=torch.Generator().manual_seed(5))\n\
         difflog.finish()\n\
         print(run.dir, flush=True)\n"
    );
    let o = py(&["-c", &script], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let dirs: Vec<PathBuf> = out.lines().map(|l| PathBuf::from(l.trim())).collect();
    assert_eq!(dirs.len(), 2, "{out}");
    let trained = difflog::recipe::TRAINED_ALGORITHMIC_MEDIA;
    let composite = difflog::recipe::COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA;
    for (run, edits) in dirs.iter().zip([false, true]) {
        let read = RunDir::open(run).unwrap();
        let view = read.view();
        let made: Vec<_> = view
            .media
            .iter()
            .filter(|m| m.key.starts_with("Generated-Image/"))
            .collect();
        assert_eq!(made.len(), if edits { 3 } else { 1 });
        let mut args = vec![
            "provenance_oracle.py".to_string(),
            "check".into(),
            tmp.path().join("root.pem").to_str().unwrap().into(),
            bits.len().to_string(),
        ];
        for m in &made {
            let marks = m.provenance.as_ref().expect("marks recorded");
            assert_eq!(
                marks.c2pa.as_deref(),
                Some("difflog test signer, Difflog Test"),
                "{marks:?}"
            );
            args.push(run.join(&m.path).to_str().unwrap().into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = py(&args, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(lines.lines().count(), made.len(), "{lines}");
        for (m, line) in made.iter().zip(lines.lines()) {
            let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(theirs["watermark"], bits.as_str(), "{theirs}");
            let c = &theirs["c2pa"];
            assert_eq!(c["state"], "trusted", "{theirs}");
            let call = m.call.unwrap();
            assert_eq!(c["recipe"]["run_id"].as_str(), Some(read.meta.id.as_str()));
            assert_eq!(c["recipe"]["call"], call, "{theirs}");
            let file = std::fs::read(run.join(&m.path)).unwrap();
            let chunks = difflog::recipe::read_text_chunks(&file).unwrap();
            let recipe = chunks.iter().find(|c| c.0 == "difflog");
            // Only a seeded call's images carry a recipe, whose digest the
            // manifest states; every image says in XMP what made it.
            let seeded = !edits || call == 2;
            assert_eq!(recipe.is_some(), seeded, "{chunks:?}");
            assert_eq!(
                c["recipe"]["recipe_sha256"].as_str(),
                recipe
                    .map(|r| difflog::format::sha256_hex(r.1.as_bytes()))
                    .as_deref(),
                "{theirs}"
            );
            let inpainted = edits && call == 2;
            let source = if inpainted { composite } else { trained };
            let xmp = &chunks
                .iter()
                .find(|c| c.0 == difflog::recipe::XMP)
                .unwrap()
                .1;
            assert!(xmp.contains(source), "{xmp}");
            if !edits {
                assert_eq!(c["actions"], serde_json::json!([["c2pa.created", trained]]));
                continue;
            }
            assert_eq!(
                c["actions"],
                serde_json::json!([["c2pa.opened", null], ["c2pa.edited", source]])
            );
            let mut ingredients = vec![serde_json::json!(["input image", "parentOf", false])];
            if inpainted {
                ingredients.push(serde_json::json!(["mask image", "inputTo", false]));
            }
            assert_eq!(c["ingredients"], serde_json::json!(ingredients), "{theirs}");
        }
    }
}

const SIGNED_VIDEOS: &str = "
import difflog, json, numpy as np
from PIL import Image
from diffusers import DiffusionPipeline
def frame(i, w, h):
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([(x * 3 + i * 8) % 256, y * 4 % 256, np.full_like(x, 90 + i * 10)], -1).astype(np.uint8))
class Clip(DiffusionPipeline):
    def __call__(self, prompt='x', num_frames=4, fps=8, width=64, height=48):
        class Out:
            frames = [[frame(i, width, height) for i in range(num_frames)]]
        return Out()
run = difflog.autolog(init=dict(project='signed-video'))
Clip()('a gradient drifting')
Clip()('an odd one', width=25, height=15)
class Restyle(DiffusionPipeline):
    def __call__(self, prompt='x', video=None, fps=8):
        class Out:
            frames = [[Image.fromarray(255 - np.asarray(f)) for f in video]]
        return Out()
Restyle()('inverted', video=[frame(i, 64, 48) for i in range(4)])
difflog.finish()
again = difflog.remake(run.dir, 1, Clip())
print(json.dumps({'dir': run.dir, 'remade': again.same}), flush=True)
";

/// Issue 37 with issue 36's signer: a generated video is signed — the MP4
/// through C2PA's BMFF binding, the animated PNG (odd sides) as any PNG —
/// and never watermarked, which its marks say. The CAI's own SDK finds
/// the manifests trusted under the test CA, stating that a trained model
/// created them (a video-to-video call's: edited it from the input video,
/// its ingredient) and the run, call and row; `verify --provenance` and
/// `inspect` agree; a changed byte of the H.264 stream breaks the MP4's
/// manifest; `remake` still finds the signed MP4 re-made (by what it
/// plays).
#[test]
fn python_recorded_videos_are_signed_and_still_remade() {
    let tmp = tempfile::tempdir().unwrap();
    let o = py(
        &["provenance_oracle.py", "ca", tmp.path().to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = tmp.path().join("marks.toml");
    std::fs::write(
        &config,
        "[sign]\ncertificate_chain = \"chain.pem\"\nprivate_key = \"key.pem\"\n\n\
         [watermark]\ntext = \"py\"\n",
    )
    .unwrap();
    let root = tmp.path().join("runs");
    let env = [
        ("DIFFLOG_DIR", root.as_path()),
        ("DIFFLOG_PROVENANCE", config.as_path()),
    ];
    let o = py(&["-c", SIGNED_VIDEOS], &env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(said["remade"], serde_json::json!([true]), "{said}");
    let run = PathBuf::from(said["dir"].as_str().unwrap());
    let read = RunDir::open(&run).unwrap();
    let view = read.view();
    let videos: Vec<_> = view
        .media
        .iter()
        .filter(|m| m.key.starts_with("Generated-Video/"))
        .collect();
    assert_eq!(
        videos.iter().map(|m| m.format.as_str()).collect::<Vec<_>>(),
        ["mp4", "png", "mp4"]
    );
    // The video-to-video call's input is stored (as an animated PNG).
    assert!(
        view.media
            .iter()
            .any(|m| m.call == Some(3) && m.format == "png" && m.video.is_some()),
        "{:?}",
        view.media
    );
    let root_pem = tmp.path().join("root.pem");
    let mut args = vec![
        "provenance_oracle.py".to_string(),
        "check".into(),
        root_pem.to_str().unwrap().into(),
        "16".into(),
    ];
    for m in &videos {
        let marks = m.provenance.as_ref().expect("marks recorded");
        assert_eq!(
            marks.c2pa.as_deref(),
            Some("difflog test signer, Difflog Test"),
            "{marks:?}"
        );
        assert_eq!(marks.watermark, None);
        assert!(
            marks
                .watermark_skipped
                .as_deref()
                .is_some_and(|w| w.contains("not watermarked")),
            "{marks:?}"
        );
        args.push(run.join(&m.path).to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = py(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trained = difflog::recipe::TRAINED_ALGORITHMIC_MEDIA;
    let lines = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for (m, line) in videos.iter().zip(lines.lines()) {
        let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
        let c = &theirs["c2pa"];
        assert_eq!(c["state"], "trusted", "{theirs}");
        assert_eq!(c["recipe"]["run_id"].as_str(), Some(read.meta.id.as_str()));
        assert_eq!(c["recipe"]["call"], m.call.unwrap(), "{theirs}");
        if m.call == Some(3) {
            assert_eq!(
                c["actions"],
                serde_json::json!([["c2pa.opened", null], ["c2pa.edited", trained]])
            );
            assert_eq!(
                c["ingredients"],
                serde_json::json!([["input video", "parentOf", false]]),
                "{theirs}"
            );
        } else {
            assert_eq!(c["actions"], serde_json::json!([["c2pa.created", trained]]));
            assert_eq!(c["ingredients"], serde_json::json!([]), "{theirs}");
        }
    }
    // difflog's own checks agree.
    let o = difflog_in(
        &root,
        &[
            "verify".as_ref(),
            run.as_os_str(),
            "--provenance".as_ref(),
            "--trust".as_ref(),
            root_pem.as_os_str(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let mp4 = run.join(&videos[0].path);
    let o = difflog_in(
        &root,
        &[
            "inspect".as_ref(),
            mp4.as_os_str(),
            "--trust".as_ref(),
            root_pem.as_os_str(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("difflog test signer"), "{out}");
    assert!(
        out.contains(&format!("digital source type  {trained}")),
        "{out}"
    );
    // One byte of the last H.264 sample changed: the manifest's hash no
    // longer holds, for difflog's reader as for the CAI's SDK.
    let mut bytes = std::fs::read(&mp4).unwrap();
    let anchors = std::fs::read_to_string(&root_pem).unwrap();
    let intact = difflog::meta::c2pa::read(&bytes, Some(&anchors))
        .unwrap()
        .unwrap();
    assert_eq!(intact.state, "trusted", "{intact:?}");
    let xmp_box = 8 + 16 + difflog::recipe::xmp_packet(trained).len();
    let at = bytes.len() - xmp_box - 40;
    bytes[at] ^= 0x55;
    let broken = difflog::meta::c2pa::read(&bytes, Some(&anchors))
        .unwrap()
        .unwrap();
    assert_eq!(broken.state, "invalid", "{broken:?}");
    let tampered = tmp.path().join("tampered.mp4");
    std::fs::write(&tampered, &bytes).unwrap();
    let o = py(
        &[
            "provenance_oracle.py",
            "check",
            root_pem.to_str().unwrap(),
            "16",
            tampered.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(theirs["c2pa"]["state"], "invalid", "{theirs}");
}

/// Issue 36's cost: a signer makes the CAI builder's size placeholder once
/// for each shape of manifest (its definition's length and ingredients)
/// and then signs without one. Calls 23 and 24 have definitions of the
/// same length but manifests of different sizes (CBOR writes 24 in two
/// bytes, 23 in one): the second image's manifest does not fit the size
/// known for its shape, and is signed again with its own — both images
/// are intact for difflog's reader and for the CAI's own SDK, as is a third
/// of a shape already known (signed in place, as the recorder signs; a
/// file that cannot be signed is left as it was).
#[test]
fn a_manifest_whose_size_differs_from_its_shapes_is_still_signed_intact() {
    use difflog::provenance::sign::{Facts, Signing};
    let tmp = tempfile::tempdir().unwrap();
    let o = py(
        &["provenance_oracle.py", "ca", tmp.path().to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap();
    let signing = Signing::new(
        &read("chain.pem"),
        &read("key.pem"),
        c2pa::SigningAlg::Es256,
    )
    .unwrap();
    let anchors = read("root.pem");
    let mut png = Vec::new();
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 90]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut files = Vec::new();
    for (call, row) in [(23, 0), (24, 0), (24, 1)] {
        let facts = Facts {
            model_id: "tiny".into(),
            weights_digest: None,
            recipe_sha256: None,
            run_id: "run".into(),
            call,
            row,
            source_type: difflog::recipe::TRAINED_ALGORITHMIC_MEDIA.into(),
        };
        // The third is signed in place, as the recorder signs.
        let signed = if row == 0 {
            signing.sign_png(&png, &facts, &[]).unwrap()
        } else {
            let mut bytes = png.clone();
            let sha256 = signing.sign_png_in(&mut bytes, &facts, &[]).unwrap();
            difflog::provenance::sign::Signed { bytes, sha256 }
        };
        assert_eq!(
            difflog::format::hex(&signed.sha256),
            difflog::format::sha256_hex(&signed.bytes)
        );
        let signed = signed.bytes;
        let ours = difflog::meta::c2pa::read(&signed, Some(&anchors))
            .unwrap()
            .unwrap();
        assert_eq!(ours.state, "trusted", "call {call}: {ours:?}");
        assert_eq!(
            difflog::provenance::sign::without_manifest(&signed).unwrap(),
            png
        );
        let file = tmp.path().join(format!("{call}-{row}.png"));
        std::fs::write(&file, &signed).unwrap();
        files.push(file.to_str().unwrap().to_string());
    }
    // A file that cannot be signed in place is left as it was.
    let mut trailing = png.clone();
    trailing.push(0);
    let facts = Facts {
        model_id: "tiny".into(),
        weights_digest: None,
        recipe_sha256: None,
        run_id: "run".into(),
        call: 1,
        row: 0,
        source_type: difflog::recipe::TRAINED_ALGORITHMIC_MEDIA.into(),
    };
    let e = signing.sign_png_in(&mut trailing, &facts, &[]).unwrap_err();
    assert!(e.contains("end chunk"), "{e}");
    assert_eq!(trailing[..png.len()], png[..]);
    assert_eq!(trailing.len(), png.len() + 1);
    let root = tmp.path().join("root.pem");
    let mut args = vec!["provenance_oracle.py", "check", root.to_str().unwrap(), "8"];
    args.extend(files.iter().map(String::as_str));
    let o = py(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for line in lines.lines() {
        let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(theirs["c2pa"]["state"], "trusted", "{theirs}");
    }
}
