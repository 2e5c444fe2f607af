//! `difflog inspect IMAGE [--run RUN] [--json]`: what an image says about
//! how it was made — the A1111 `parameters` and difflog's recipe a PNG's
//! text chunks carry (see [`crate::recipe`]), other tools' metadata in
//! PNG, JPEG and WebP files (see [`crate::meta`]) — and, given a run,
//! whether the file is one of that run's images, unchanged (its SHA-256 is
//! a media digest of the run). A file from another tool simply has no
//! recipe.

use crate::error::{Error, Result};
use crate::format::sha256_hex;
use crate::read::RunDir;
use crate::recipe::{DIFFLOG, MAX_PNG_BYTES, PARAMETERS};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// What `inspect` found; `belongs` is `None` without a run to check against.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file's SHA-256.
    pub sha256: String,
    /// The A1111 parameters text, if any.
    pub parameters: Option<String>,
    /// difflog's recipe, if any (and valid JSON).
    pub difflog: Option<Value>,
    /// Every other text chunk, keyword → text.
    pub other: Map<String, Value>,
    /// What the tool that wrote the chunks says of how the image was made,
    /// in one schema (see [`crate::meta`]), if any tool's metadata is there.
    pub generation: Option<crate::meta::Generation>,
    /// The run checked against: its id, and whether the file is one of its
    /// images unchanged.
    pub run: Option<(String, bool)>,
    /// The copy hidden in a PNG's pixels (see [`crate::meta::stealth`]),
    /// or why one whose signature is there cannot be read.
    pub hidden: Option<std::result::Result<crate::meta::stealth::Hidden, String>>,
    /// What its XMP packet says (see [`crate::meta::xmp`]), or why it
    /// cannot be read.
    pub xmp: Option<std::result::Result<crate::meta::xmp::Xmp, String>>,
    /// Its Content Credentials (C2PA), validated, or why they cannot be
    /// read; `None` when it carries none.
    pub credentials: Option<std::result::Result<crate::meta::c2pa::Credentials, String>>,
    /// The invisible watermarks looked for and what was read, or why none
    /// can be (see [`crate::provenance::check`]).
    pub watermarks: std::result::Result<Vec<crate::provenance::check::WatermarkCheck>, String>,
    /// How many frames it has: more than 1 for an animated PNG (a video
    /// difflog recorded), 1 for a still, `None` when its header says none.
    pub frames: Option<u32>,
}

/// What `difflog inspect` checks an image against.
#[derive(Debug, Clone, Default)]
pub struct Against<'a> {
    /// A run: is the file one of its images, unchanged? Its record's
    /// watermark is looked for too.
    pub run: Option<&'a Path>,
    /// A PEM file of trust anchors for its Content Credentials.
    pub trust: Option<&'a Path>,
    /// Watermark messages to look for besides diffusers' SDXL mark (and
    /// the run's): `(name, message)`.
    pub watermarks: Vec<(String, crate::provenance::watermark::Message)>,
}

/// The trust anchors in a PEM file, read bounded; `None` without one.
pub(crate) fn trust_anchors(trust: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = trust else { return Ok(None) };
    let bytes = crate::read::read_regular(path, crate::meta::c2pa::MAX_ANCHORS)
        .map_err(|e| Error::file(path, e.to_string()))?;
    let pem = String::from_utf8(bytes)
        .ok()
        .filter(|s| s.contains("-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| Error::file(path, "not a PEM file of certificates (trust anchors)"))?;
    Ok(Some(pem))
}

/// The watermarks `--watermark` names: each a text, or `bits:` and its
/// bits; a bad one is an error naming it.
pub fn watermarks_given(
    given: &[String],
) -> Result<Vec<(String, crate::provenance::watermark::Message)>> {
    use crate::provenance::watermark::Message;
    given
        .iter()
        .map(|g| {
            let m = match g.strip_prefix("bits:") {
                Some(bits) => Message::from_bits(bits),
                None => Message::from_text(g),
            };
            m.map(|m| (g.clone(), m)).map_err(|why| Error::Setting {
                name: "--watermark".into(),
                value: g.clone(),
                why,
            })
        })
        .collect()
}

/// Reads `image` and says what it carries, checked against `with`.
pub fn inspect_png(image: &Path, with: &Against<'_>) -> Result<Inspection> {
    let bytes = crate::read::read_regular(image, MAX_PNG_BYTES)
        .map_err(|e| Error::file(image, e.to_string()))?;
    inspect_bytes(image, &bytes, with)
}

/// [`inspect_png`] of the file's bytes, already read (bounded).
fn inspect_bytes(image: &Path, bytes: &[u8], with: &Against<'_>) -> Result<Inspection> {
    let anchors = trust_anchors(with.trust)?;
    let chunks =
        crate::meta::texts_of_file(bytes).map_err(|e| Error::file(image, e.to_string()))?;
    // The pixels are decoded once: for the hidden copy itself, and for
    // the generation when the text says nothing.
    let hidden = crate::meta::stealth::read_hidden(bytes).transpose();
    let generation = crate::meta::read(&chunks).or_else(|| match &hidden {
        Some(Ok(h)) => crate::meta::generation_of_hidden(h),
        _ => None,
    });
    let mut found = Inspection {
        sha256: sha256_hex(bytes),
        parameters: None,
        difflog: None,
        other: Map::new(),
        generation,
        run: None,
        hidden,
        xmp: crate::meta::xmp::of_texts(&chunks),
        credentials: crate::meta::c2pa::read(bytes, anchors.as_deref()).transpose(),
        watermarks: Ok(Vec::new()),
        frames: crate::read::apng_frames(bytes).ok(),
    };
    for (keyword, text) in chunks {
        match keyword.as_str() {
            PARAMETERS if found.parameters.is_none() => found.parameters = Some(text),
            DIFFLOG if found.difflog.is_none() => {
                found.difflog = serde_json::from_str(&text).ok().filter(Value::is_object);
            }
            _ => {
                found.other.insert(keyword, json!(text));
            }
        }
    }
    let mut looked_for = crate::provenance::check::well_known();
    looked_for.extend(with.watermarks.iter().cloned());
    if let Some(dir) = with.run {
        let r = RunDir::open(dir)?;
        let view = r.view();
        let media = view.media.iter().find(|m| m.digest == found.sha256);
        let recorded = media
            .and_then(|m| m.provenance.as_ref())
            .and_then(|p| p.watermark.as_ref())
            .and_then(|w| crate::provenance::watermark::Message::from_bits(&w.bits).ok());
        if let Some(m) = recorded {
            looked_for.push(("recorded".into(), m));
        }
        found.run = Some((r.meta.id.clone(), media.is_some()));
    }
    found.watermarks = crate::provenance::check::pixels_of(bytes)
        .and_then(|img| crate::provenance::check::watermarks(&img, &looked_for));
    Ok(found)
}

/// `difflog inspect` of an MP4 (a video difflog kept as H.264): its
/// digest, picture size and frames, its XMP and Content Credentials, and
/// whether it is one of the run's videos. It carries no recipe or
/// watermark.
fn inspect_mp4(
    out: &mut dyn Write,
    path: &Path,
    bytes: &[u8],
    with: &Against<'_>,
    as_json: bool,
) -> Result<bool> {
    let video = crate::read::mp4_video(bytes).map_err(|why| Error::file(path, why))?;
    // Its XMP box, as a PNG's XMP chunk is read (IPTC's digital source type).
    let xmp = crate::read::mp4_xmp(bytes)
        .transpose()
        .map(|p| p.and_then(|p| crate::meta::xmp::read(&p)));
    let anchors = trust_anchors(with.trust)?;
    let credentials = crate::meta::c2pa::read(bytes, anchors.as_deref()).transpose();
    let sha256 = sha256_hex(bytes);
    let run = match with.run {
        Some(dir) => {
            let r = RunDir::open(dir)?;
            let belongs = r.view().media.iter().any(|m| m.digest == sha256);
            Some((r.meta.id.clone(), belongs))
        }
        None => None,
    };
    let w = |e| Error::io("<stdout>", "write", e);
    if as_json {
        let v = json!({
            "path": path, "sha256": sha256, "frames": video.frames,
            "video": {"format": "mp4", "codec": "h264", "width": video.width, "height": video.height},
            "run": run.as_ref().map(|(id, belongs)| json!({"id": id, "belongs": belongs})),
            "xmp": xmp.as_ref().map(|x| match x {
                Ok(x) => json!(x),
                Err(why) => json!({"error": why}),
            }),
            "c2pa": credentials.as_ref().map(|c| match c {
                Ok(c) => json!(c),
                Err(why) => json!({"error": why}),
            }),
        });
        writeln!(super::Escaping::json(out), "{v}").map_err(w)?;
    } else {
        let mut esc = super::Escaping::text(out);
        let out: &mut dyn Write = &mut esc;
        writeln!(out, "{}  sha256 {sha256}", path.display()).map_err(w)?;
        writeln!(
            out,
            "\nMP4 video (H.264): {}x{}, {} frames\nno recipe or watermark is read from an MP4",
            video.width, video.height, video.frames
        )
        .map_err(w)?;
        write_xmp_found(out, &xmp, true).map_err(w)?;
        write_credentials_found(out, &credentials, with.trust.is_some(), "video").map_err(w)?;
        match &run {
            Some((id, true)) => {
                writeln!(out, "\nverdict: belongs to run {id}, unchanged").map_err(w)?
            }
            Some((id, false)) => writeln!(
                out,
                "\nverdict: NOT a video of run {id} as recorded: no media of the run has this SHA-256"
            )
            .map_err(w)?,
            None => {}
        }
    }
    Ok(run.is_none_or(|(_, belongs)| belongs))
}

/// `difflog inspect`: prints the inspection; `Ok(false)` when a run was
/// given and the image is not one of its images unchanged (exit code 1).
pub fn inspect(
    out: &mut dyn Write,
    image: &Path,
    with: &Against<'_>,
    as_json: bool,
) -> Result<bool> {
    let trust = with.trust;
    let bytes = crate::read::read_regular(image, MAX_PNG_BYTES)
        .map_err(|e| Error::file(image, e.to_string()))?;
    if bytes.get(4..8) == Some(b"ftyp") {
        return inspect_mp4(out, image, &bytes, with, as_json);
    }
    let i = inspect_bytes(image, &bytes, with)?;
    let w = |e| Error::io("<stdout>", "write", e);
    let ok = i.run.as_ref().is_none_or(|(_, belongs)| *belongs);
    if as_json {
        let v = json!({
            "path": image, "sha256": i.sha256, "frames": i.frames, "parameters": i.parameters,
            "difflog": i.difflog, "other_text": i.other, "generation": i.generation,
            "run": i.run.as_ref().map(|(id, belongs)| json!({"id": id, "belongs": belongs})),
            "hidden": i.hidden.as_ref().map(|h| match h {
                Ok(h) => json!({
                    "signature": h.signature,
                    "text": h.texts.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
                }),
                Err(why) => json!({"error": why}),
            }),
            "xmp": i.xmp.as_ref().map(|x| match x {
                Ok(x) => json!(x),
                Err(why) => json!({"error": why}),
            }),
            "c2pa": i.credentials.as_ref().map(|c| match c {
                Ok(c) => json!(c),
                Err(why) => json!({"error": why}),
            }),
            "watermarks": match &i.watermarks {
                Ok(w) => json!(w),
                Err(why) => json!({"error": why}),
            },
        });
        writeln!(super::Escaping::json(out), "{v}").map_err(w)?;
        return Ok(ok);
    }
    // Text from the file is shown as text: control characters escaped.
    let mut esc = super::Escaping::text(out);
    let out: &mut dyn Write = &mut esc;
    writeln!(out, "{}  sha256 {}", image.display(), i.sha256).map_err(w)?;
    if let Some(n) = i.frames.filter(|n| *n > 1) {
        writeln!(
            out,
            "\nanimated PNG: {n} frames (a video; what follows reads its first frame)"
        )
        .map_err(w)?;
    }
    // Every line of text from the file is indented behind a bar, and values
    // are kept on their line: nothing in a file can print a line of
    // difflog's own (a forged verdict).
    match &i.parameters {
        Some(p) => writeln!(out, "\nparameters (from the file):\n{}", quoted(p)).map_err(w)?,
        None => writeln!(
            out,
            "\nno generation parameters (no `parameters` text chunk)"
        )
        .map_err(w)?,
    }
    match &i.difflog {
        Some(d) => writeln!(
            out,
            "\ndifflog recipe: run {} call {} row {}, model {} (weights {}), seed {}",
            inline(d["run_id"].as_str().unwrap_or("?")),
            inline(&d["call"].to_string()),
            inline(&d["row"].to_string()),
            inline(d["model_id"].as_str().unwrap_or("?")),
            inline(d["weights_digest"].as_str().unwrap_or("unknown")),
            inline(&d["seed"].to_string())
        )
        .map_err(w)?,
        None => writeln!(out, "\nno difflog recipe").map_err(w)?,
    }
    match &i.generation {
        Some(g) => write_generation(out, g).map_err(w)?,
        None => writeln!(out, "\nno tool's generation metadata found").map_err(w)?,
    }
    for (k, v) in &i.other {
        // A packet read above is shown there (whole with --json).
        if k == crate::meta::xmp::KEYWORD && matches!(i.xmp, Some(Ok(_))) {
            continue;
        }
        writeln!(
            out,
            "\ntext chunk {} (from the file):\n{}",
            inline(&format!("{k:?}")),
            quoted(v.as_str().unwrap_or(""))
        )
        .map_err(w)?;
    }
    write_credentials_found(out, &i.credentials, trust.is_some(), "image").map_err(w)?;
    write_watermarks(out, &i.watermarks).map_err(w)?;
    write_xmp_found(out, &i.xmp, false).map_err(w)?;
    match &i.hidden {
        Some(Ok(h)) => {
            writeln!(
                out,
                "\nhidden in the pixels' lowest bits ({}):",
                inline(&h.signature)
            )
            .map_err(w)?;
            for (k, v) in &h.texts {
                writeln!(out, "  {}:\n{}", inline(&format!("{k:?}")), quoted(v)).map_err(w)?;
            }
        }
        Some(Err(why)) => writeln!(
            out,
            "\na copy hidden in the pixels cannot be read: {}",
            inline(why)
        )
        .map_err(w)?,
        None => {}
    }
    if let Some((id, belongs)) = &i.run {
        if *belongs {
            writeln!(out, "\nverdict: belongs to run {id}, unchanged").map_err(w)?;
        } else {
            let claim = i
                .difflog
                .as_ref()
                .filter(|d| d["run_id"] == id.as_str())
                .map(|_| " (its recipe names this run: the file was changed after it was recorded)")
                .unwrap_or("");
            writeln!(
                out,
                "\nverdict: NOT an image of run {id} as recorded: no media of the run has this SHA-256{claim}"
            )
            .map_err(w)?;
        }
    }
    Ok(ok)
}

/// The normalised generation metadata, a field a line, values from the
/// file kept on their line.
/// What Content Credentials say, and whether they hold.
fn write_credentials(
    out: &mut dyn Write,
    c: &crate::meta::c2pa::Credentials,
    anchors_given: bool,
) -> std::io::Result<()> {
    let verdict = match c.state.as_str() {
        "trusted" => "TRUSTED: intact, and the signer chains to a trust anchor given".to_string(),
        "valid" if anchors_given => {
            "valid: intact (signature and hash binding hold), but the signer chains to none of the trust anchors given".to_string()
        }
        "valid" => {
            "valid: intact (signature and hash binding hold); signer not checked against any trust anchor (--trust PEM)".to_string()
        }
        _ => "INVALID: the file or its manifest is not what was signed".to_string(),
    };
    writeln!(out, "\nContent Credentials (C2PA): {verdict}")?;
    for f in &c.failures {
        writeln!(out, "  failure            {}", inline(f))?;
    }
    if let Some(s) = &c.signer {
        let who = [&s.common_name, &s.issuer]
            .iter()
            .filter_map(|v| v.as_deref())
            .map(inline)
            .collect::<Vec<_>>()
            .join(", ");
        let alg = s.alg.as_deref().map(inline).unwrap_or_else(|| "?".into());
        let time = s
            .time
            .as_deref()
            .map(|t| format!("time-stamped {}", inline(t)))
            .unwrap_or_else(|| "no time stamp".into());
        writeln!(out, "  signed by          {who} ({alg}, {time})")?;
    }
    if !c.claim_generator.is_empty() {
        let g: Vec<String> = c.claim_generator.iter().map(|g| inline(g)).collect();
        writeln!(out, "  claim generator    {}", g.join("; "))?;
    }
    if let Some(t) = &c.title {
        writeln!(out, "  title              {}", inline(t))?;
    }
    for a in &c.actions {
        let source = a
            .digital_source_type
            .as_deref()
            .map(|t| {
                let words = crate::meta::xmp::generative(t)
                    .map(|w| format!(" — {w}"))
                    .unwrap_or_default();
                format!(", digital source type {}{words}", inline(t))
            })
            .unwrap_or_default();
        let agent = a
            .software_agent
            .as_deref()
            .map(|s| format!(", by {}", inline(s)))
            .unwrap_or_default();
        writeln!(
            out,
            "  action             {}{source}{agent}",
            inline(&a.action)
        )?;
    }
    for g in &c.ingredients {
        let own = if g.has_credentials {
            ", with credentials of its own"
        } else {
            ""
        };
        writeln!(
            out,
            "  ingredient         {} ({}{own})",
            inline(g.title.as_deref().unwrap_or("untitled")),
            inline(&g.relationship)
        )?;
    }
    Ok(())
}

/// The XMP properties read, each on its line.
fn write_watermarks(
    out: &mut dyn Write,
    found: &std::result::Result<Vec<crate::provenance::check::WatermarkCheck>, String>,
) -> std::io::Result<()> {
    let found = match found {
        Ok(f) => f,
        Err(why) => return writeln!(out, "\ninvisible watermark: not read: {}", inline(why)),
    };
    writeln!(out, "\ninvisible watermark (invisible-watermark's dwtDct):")?;
    for f in found {
        let verdict = if f.found { "FOUND" } else { "not found" };
        writeln!(
            out,
            "  {:<16} {verdict} ({} bits; the blocks agree {:.0}%)",
            f.name,
            f.bits.len(),
            f.agreement * 100.0
        )?;
    }
    Ok(())
}

/// The Content Credentials read from a file (`what`: image, video), or
/// why they cannot be, or that it is not signed.
fn write_credentials_found(
    out: &mut dyn Write,
    found: &Option<std::result::Result<crate::meta::c2pa::Credentials, String>>,
    trusted: bool,
    what: &str,
) -> std::io::Result<()> {
    match found {
        Some(Ok(c)) => write_credentials(out, c, trusted),
        Some(Err(why)) => writeln!(
            out,
            "\nContent Credentials (C2PA): cannot be read: {}",
            inline(why)
        ),
        None => writeln!(
            out,
            "\nno Content Credentials (C2PA): the {what} is not signed"
        ),
    }
}

/// The XMP read from a file, or why it cannot be; `say_none`: a line when
/// it has none.
fn write_xmp_found(
    out: &mut dyn Write,
    found: &Option<std::result::Result<crate::meta::xmp::Xmp, String>>,
    say_none: bool,
) -> std::io::Result<()> {
    match found {
        Some(Ok(x)) if !x.is_empty() => write_xmp(out, x),
        Some(Ok(_)) => writeln!(
            out,
            "\nXMP: none of the properties difflog reads (--json has the packet)"
        ),
        Some(Err(why)) => writeln!(out, "\nXMP cannot be read: {}", inline(why)),
        None if say_none => writeln!(out, "\nno XMP"),
        None => Ok(()),
    }
}

fn write_xmp(out: &mut dyn Write, x: &crate::meta::xmp::Xmp) -> std::io::Result<()> {
    writeln!(out, "\nXMP (from the file):")?;
    if let Some(t) = &x.digital_source_type {
        let words = x
            .generative()
            .map(|w| format!(" — {w}"))
            .unwrap_or_default();
        writeln!(out, "  digital source type  {}{words}", inline(t))?;
    }
    let creator = (!x.creator.is_empty()).then(|| x.creator.join(", "));
    for (name, v) in [
        ("creator tool", &x.creator_tool),
        ("title", &x.title),
        ("description", &x.description),
        ("creator", &creator),
    ] {
        if let Some(v) = v {
            writeln!(out, "  {name:<19}  {}", inline(v))?;
        }
    }
    Ok(())
}

fn write_generation(out: &mut dyn Write, g: &crate::meta::Generation) -> std::io::Result<()> {
    let version = g
        .tool_version
        .as_deref()
        .map(|v| format!(" {}", inline(v)))
        .unwrap_or_default();
    let hidden = g
        .hidden_copy
        .as_deref()
        .map(|s| format!(" (read from the copy hidden in the pixels, {})", inline(s)))
        .unwrap_or_default();
    writeln!(
        out,
        "\ngeneration, as {}{version} wrote it{hidden}:",
        inline(&g.tool)
    )?;
    let text = |v: &Option<String>| v.as_deref().map(inline);
    let num = |v: Option<u64>| v.map(|n| n.to_string());
    let float = |v: Option<f64>| v.map(|n| n.to_string());
    let size = match (g.width, g.height) {
        (Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    };
    let model = match (&g.model, &g.model_hash) {
        (Some(m), Some(h)) => Some(format!("{} (hash {})", inline(m), inline(h))),
        (Some(m), None) => Some(inline(m)),
        (None, Some(h)) => Some(format!("hash {}", inline(h))),
        (None, None) => None,
    };
    let rows = [
        ("prompt", text(&g.prompt)),
        ("negative prompt", text(&g.negative_prompt)),
        ("seed", num(g.seed)),
        ("steps", num(g.steps)),
        ("sampler", text(&g.sampler)),
        ("scheduler", text(&g.scheduler)),
        ("cfg", float(g.cfg)),
        ("size", size),
        ("model", model),
        ("denoise", float(g.denoise)),
    ];
    for (name, value) in rows {
        if let Some(v) = value {
            writeln!(out, "  {name:<16} {v}")?;
        }
    }
    for l in &g.loras {
        let weight = l.weight.map(|w| format!(" weight {w}")).unwrap_or_default();
        let hash = l
            .hash
            .as_deref()
            .map(|h| format!(" hash {}", inline(h)))
            .unwrap_or_default();
        writeln!(out, "  {:<16} {}{weight}{hash}", "lora", inline(&l.name))?;
    }
    for u in &g.unresolved {
        writeln!(out, "  {:<16} {}", "not resolved", inline(u))?;
    }
    Ok(())
}

/// Text from a file, every line indented behind a bar.
fn quoted(text: &str) -> String {
    text.split('\n')
        .map(|l| format!("  | {}", l.trim_end_matches('\r')))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value from a file kept on its line: line breaks shown as `\n`.
fn inline(text: &str) -> String {
    text.replace('\r', "\\r")
        .replace('\n', "\\n")
        .replace(['\u{2028}', '\u{2029}', '\u{85}'], " ")
}
