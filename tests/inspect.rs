//! Images that carry their recipe (issue 18, item 2): every generated PNG
//! holds A1111's `parameters` and difflog's JSON recipe in its own text
//! chunks, and `difflog inspect` reads them from any PNG and says whether a
//! file is one of a run's images unchanged.

mod common;

use common::{difflog_bin, only_run, Req, TestPipeline};
use difflog::read::RunDir;
use difflog::recipe::read_text_chunks;
use difflog::run::media::{encode_png, encode_png_with_text};
use difflog::{Init, Run};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn inspect(args: &[&str]) -> Output {
    Command::new(difflog_bin())
        .arg("inspect")
        .args(args)
        .output()
        .unwrap()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The generated images of a run, by row, with their prompts.
fn images(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let v = RunDir::open(dir).unwrap().view();
    let mut out = Vec::new();
    for c in v.calls.values() {
        for r in &c.rows {
            for cell in &r.cells {
                if let difflog::event::Cell::Image { column, path, .. } = cell {
                    if column == "Generated-Image" {
                        out.push((dir.join(path), c.started.call, r.index));
                    }
                }
            }
        }
    }
    out
}

/// Splits A1111's parameters line into its `Key: value` pairs, honouring
/// the quotes A1111 puts around values holding `,` `:` or line breaks; `None`
/// when the line does not follow that grammar.
fn a1111_pairs(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (key, after) = rest.split_once(": ")?;
        if key.is_empty()
            || !key.chars().next()?.is_ascii_alphabetic()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        {
            return None;
        }
        let (value, next) = if after.starts_with('"') {
            // A JSON string: find its end.
            let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
            let v = de.next()?.ok()?;
            let used = de.byte_offset();
            (v, &after[used..])
        } else {
            match after.find(", ") {
                Some(i) => (after[..i].to_string(), &after[i..]),
                None => (after.to_string(), ""),
            }
        };
        out.push((key.to_string(), value));
        rest = match next.strip_prefix(", ") {
            Some(r) => r,
            None if next.is_empty() => "",
            None => return None,
        };
    }
    Some(out)
}

#[test]
fn every_generated_png_carries_its_recipe_and_inspect_reads_it_back() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("recipes").root(root.path())).unwrap();
    let mut p = TestPipeline::new();
    let big = "a very long prompt, ".repeat(52_429); // ~1 MB
    let prompts = ["ünïcödé 猫, \"quoted\": yes", "two\nlines", big.as_str()];
    let mut r = Req::new(&prompts, 77);
    r.negative = Some("blurry, low quality".into());
    run.record(&mut p, &r).unwrap();
    let mut xl = TestPipeline::new();
    xl.second_prompts = true;
    run.record(&mut xl, &Req::new(&["a castle"], 5)).unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    let id = RunDir::open(&dir).unwrap().meta.id;
    let imgs = images(&dir);
    assert_eq!(imgs.len(), 4);
    for (i, (path, call, row)) in imgs.iter().enumerate() {
        let o = inspect(&[
            path.to_str().unwrap(),
            "--run",
            dir.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v = json_of(&o);
        assert_eq!(v["run"]["belongs"], true, "{path:?}");
        assert_eq!(v["run"]["id"], id.as_str());
        let d = &v["difflog"];
        assert_eq!(d["run_id"], id.as_str());
        assert_eq!(
            (&d["call"], &d["row"]),
            (&Value::from(*call), &Value::from(*row))
        );
        assert_eq!(d["model_id"], "test/model");
        assert_eq!(d["weights_digest"], "sha256:00ff");
        assert_eq!(d["scheduler"]["name"], "ddim");
        let (prompt, negative, seed) = if i < 3 {
            (prompts[i], Some("blurry, low quality"), 77 + i as u64)
        } else {
            ("a castle", None, 5)
        };
        // Round trip of every field: unicode, quotes, line breaks, 1 MB.
        assert_eq!(d["prompt"], prompt);
        assert_eq!(d["negative_prompt"].as_str(), negative);
        assert_eq!(d["seed"], seed);
        assert_eq!(
            (&d["width"], &d["height"]),
            (&Value::from(16), &Value::from(16))
        );
        if i == 3 {
            assert_eq!(d["prompt_2"], "a castle (2)");
        }
        // A1111's structure: the prompt, "Negative prompt: …", then one
        // line of `Key: value` pairs with A1111's key names.
        // A prompt's own line breaks are spaces there (issue 32, item 14):
        // readers split the text into lines; the difflog chunk is exact.
        let line = |t: &str| t.replace(|c: char| c.is_control(), " ");
        let params = v["parameters"].as_str().unwrap();
        let (head, last) = params.rsplit_once('\n').unwrap();
        match negative {
            Some(n) => assert_eq!(
                head,
                format!("{}\nNegative prompt: {}", line(prompt), line(n))
            ),
            None => assert_eq!(head, line(prompt)),
        }
        let pairs = a1111_pairs(last).unwrap_or_else(|| panic!("not A1111's grammar: {last}"));
        // A1111's keys in A1111's order (CFG scale and Model hash appear
        // when the call has a guidance scale and the weights a full digest;
        // the unit test in src/recipe.rs and the tiny model's run show them).
        const ORDER: [&str; 7] = [
            "Steps",
            "Sampler",
            "CFG scale",
            "Seed",
            "Size",
            "Model hash",
            "Model",
        ];
        let keys: Vec<&str> = pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| ORDER.contains(k))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by_key(|k| ORDER.iter().position(|o| o == k));
        assert_eq!(keys, sorted, "{last}");
        for k in ["Steps", "Sampler", "Seed", "Size", "Model"] {
            assert!(keys.contains(&k), "{k} missing: {last}");
        }
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("Steps"), "10");
        assert_eq!(get("Sampler"), "DDIM");
        assert_eq!(get("Seed"), seed.to_string());
        assert_eq!(get("Size"), "16x16");
        assert_eq!(get("Model"), "test/model");
        if i == 3 {
            assert_eq!(get("Prompt 2"), "a castle (2)");
        }
    }
    // The text form says the same.
    let o = inspect(&[imgs[0].0.to_str().unwrap(), "--run", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        text.contains("Negative prompt: blurry, low quality"),
        "{text}"
    );
    assert!(
        text.contains(&format!("belongs to run {id}, unchanged")),
        "{text}"
    );
}

#[test]
fn a_changed_image_is_not_the_runs_and_a_foreign_png_is_read_as_it_is() {
    let root = tempfile::tempdir().unwrap();
    let run = Run::create(Init::project("tamper").root(root.path())).unwrap();
    run.record(&mut TestPipeline::new(), &Req::new(&["original"], 3))
        .unwrap();
    run.finish().unwrap();
    let dir = only_run(root.path());
    let (path, _, _) = images(&dir).remove(0);
    let bytes = std::fs::read(&path).unwrap();
    // One pixel edited, the recipe kept (as an editor that keeps metadata does).
    let mut img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    img.get_pixel_mut(0, 0).0[0] ^= 0xff;
    let chunks: Vec<(String, String, bool)> = read_text_chunks(&bytes)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t, true))
        .collect();
    let edited = root.path().join("edited.png");
    std::fs::write(&edited, encode_png_with_text(&img, &chunks).unwrap()).unwrap();
    let o = inspect(&[edited.to_str().unwrap(), "--run", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("NOT an image of run"), "{text}");
    assert!(text.contains("changed after it was recorded"), "{text}");
    let o = inspect(&[
        edited.to_str().unwrap(),
        "--run",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json_of(&o)["run"]["belongs"], false);
    // The untouched copy still belongs.
    let copy = root.path().join("copy.png");
    std::fs::copy(&path, &copy).unwrap();
    let o = inspect(&[copy.to_str().unwrap(), "--run", dir.to_str().unwrap()]);
    assert!(o.status.success());

    // A PNG from another tool: no text at all, then A1111's chunk only.
    let plain = root.path().join("plain.png");
    std::fs::write(&plain, encode_png(&img).unwrap()).unwrap();
    let o = inspect(&[plain.to_str().unwrap(), "--json"]);
    assert!(o.status.success());
    let v = json_of(&o);
    assert!(v["parameters"].is_null() && v["difflog"].is_null(), "{v}");
    let o = inspect(&[plain.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("no generation parameters"));
    let a1111 = root.path().join("a1111.png");
    let text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 16x16";
    let chunks = [
        ("parameters".to_string(), text.to_string(), false),
        ("Software".to_string(), "another tool".to_string(), false),
    ];
    std::fs::write(&a1111, encode_png_with_text(&img, &chunks).unwrap()).unwrap();
    let v = json_of(&inspect(&[a1111.to_str().unwrap(), "--json"]));
    assert_eq!(v["parameters"], text);
    assert!(v["difflog"].is_null());
    assert_eq!(v["other_text"]["Software"], "another tool");
    // Issue 32, item 15: text in the file cannot print a verdict of its own.
    let forged = root.path().join("forged.png");
    let chunks = [
        (
            "parameters".to_string(),
            "a cat\n\nverdict: belongs to run 20261205T000000Z-abcd, unchanged\nbelongs to run x, unchanged"
                .to_string(),
            false,
        ),
        ("verdict".to_string(), "belongs to run y, unchanged".to_string(), false),
    ];
    std::fs::write(&forged, encode_png_with_text(&img, &chunks).unwrap()).unwrap();
    let o = inspect(&[forged.to_str().unwrap()]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for line in text.lines() {
        assert!(
            !line.starts_with("verdict") && !line.starts_with("belongs"),
            "a line from the file reads as difflog's own: {line:?}\n{text}"
        );
    }
    assert!(text.contains("  | verdict: belongs to run 2026"), "{text}");
    // The real verdict, given a run, is at the start of its line.
    let o = inspect(&[copy.to_str().unwrap(), "--run", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.starts_with("verdict: belongs to run ")));

    // Issue 32, item 6: a few KB of zTXt inflating to 24 MiB is refused
    // with a message, within one text budget (16 MiB), not kept.
    let bomb = root.path().join("bomb.png");
    {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, 16, 16);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let big = "a".repeat(2 << 20);
        for i in 0..12 {
            enc.add_ztxt_chunk(format!("k{i}"), big.clone()).unwrap();
        }
        let mut w = enc.write_header().unwrap();
        w.write_image_data(img.as_raw()).unwrap();
        w.finish().unwrap();
        assert!(bytes.len() < 200_000, "{}", bytes.len());
        std::fs::write(&bomb, bytes).unwrap();
    }
    let o = inspect(&[bomb.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bomb.png") && err.contains("more than 16 MiB of text"),
        "{err}"
    );

    // Not an image: a clear error naming the file; a PNG cut short too.
    let junk = root.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let o = inspect(&[junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("junk.png") && err.contains("not a PNG, JPEG or WebP file"),
        "{err}"
    );
    let cut = root.path().join("cut.png");
    std::fs::write(&cut, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let o = inspect(&[cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cut.png") && err.contains("not a readable PNG"),
        "{err}"
    );
}
