//! The recipe every generated PNG carries in its own text chunks, so that an
//! image copied out of a run still says how it was made (issue 18):
//!
//! - `parameters`: the generation parameters in the form Automatic1111
//!   writes — the prompt, a `Negative prompt: …` line, then one line of
//!   `Key: value` pairs (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`,
//!   `Model hash`, `Model`), which A1111, ComfyUI, civitai and many image
//!   tools read. A tEXt chunk when the text is Latin-1, else iTXt (UTF-8),
//!   as PIL — and so A1111 — writes it.
//! - `difflog`: an iTXt chunk with one JSON object — run id, call, row, the
//!   image's prompts, seed, size, model id and weights digest, the scheduler
//!   config and every other argument of the call.
//!
//! The recipe is a pure function of what the run records, with nothing that
//! changes between recording and replaying (no times, no version), so a
//! replayed image carries the same chunks and stays byte-identical. The
//! media digest is the SHA-256 of the file as written, chunks included.

use serde_json::{json, Map, Value};

/// The keyword of the A1111-style parameters chunk.
pub const PARAMETERS: &str = "parameters";
/// The keyword of difflog's JSON chunk.
pub const DIFFLOG: &str = "difflog";
/// The largest PNG `difflog inspect` reads.
pub const MAX_PNG_BYTES: u64 = 512 << 20;
/// The most text (all chunks together, inflated) read from one PNG.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// What the recipe of one image is made from: the call's record and the
/// image's row.
#[derive(Debug, Clone)]
pub struct RecipeInput<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// The call number.
    pub call: u32,
    /// The image's row in the call's table.
    pub row: u32,
    /// The image's own prompts.
    pub prompts: RowPrompts<'a>,
    /// The image's seed.
    pub seed: u64,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Every argument of the call, as recorded.
    pub params: &'a Map<String, Value>,
    /// The model id.
    pub model_id: &'a str,
    /// The weights digest, if known.
    pub weights_digest: Option<&'a str>,
    /// The scheduler's configuration.
    pub scheduler: &'a Value,
}

/// What every image of one call shares in its recipe: the call's arguments,
/// model and scheduler. Each image adds its own prompts, seed and size.
#[derive(Debug, Clone)]
pub struct CallRecipe {
    /// The run id.
    pub run_id: String,
    /// Every argument of the call, as recorded.
    pub params: Map<String, Value>,
    /// The model id.
    pub model_id: String,
    /// The weights digest, if known.
    pub weights_digest: Option<String>,
    /// The scheduler's configuration.
    pub scheduler: Value,
}

/// One image's own prompts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RowPrompts<'a> {
    /// The prompt.
    pub prompt: &'a str,
    /// The negative prompt, if any.
    pub negative_prompt: Option<&'a str>,
    /// SDXL's second prompt, if any.
    pub prompt_2: Option<&'a str>,
    /// SDXL's second negative prompt, if any.
    pub negative_prompt_2: Option<&'a str>,
    /// SD3's third prompt (T5's), if any.
    pub prompt_3: Option<&'a str>,
    /// SD3's third negative prompt, if any.
    pub negative_prompt_3: Option<&'a str>,
}

impl CallRecipe {
    /// The text chunks of the image in row `row` of call `call`.
    pub fn chunks(
        &self,
        call: u32,
        row: u32,
        p: RowPrompts<'_>,
        seed: u64,
        size: (u32, u32),
    ) -> Vec<TextChunk> {
        chunks(&RecipeInput {
            run_id: &self.run_id,
            call,
            row,
            prompts: p,
            seed,
            size,
            params: &self.params,
            model_id: &self.model_id,
            weights_digest: self.weights_digest.as_deref(),
            scheduler: &self.scheduler,
        })
    }
}

/// A1111's name for a scheduler, where one matches; else difflog's own.
fn sampler_name(scheduler: &Value) -> Option<String> {
    let name = scheduler["name"].as_str()?;
    Some(
        match name {
            "ddim" => "DDIM",
            "euler" => "Euler",
            "euler-a" | "euler_a" | "euler-ancestral" => "Euler a",
            "dpm++2m" | "dpmpp-2m" | "dpm-solver++" => "DPM++ 2M",
            "lcm" => "LCM",
            "pndm" | "plms" => "PLMS",
            "lms" => "LMS",
            "heun" => "Heun",
            other => other,
        }
        .to_string(),
    )
}

/// A value as A1111 writes it in its parameters line: plain, or JSON-quoted
/// when it holds a `,`, a `:` or a line break (its `quote`).
fn quote(v: &str) -> String {
    if v.contains([',', ':', '\n', '"']) {
        serde_json::to_string(v).unwrap_or_default()
    } else {
        v.to_string()
    }
}

/// A prompt as one line of the `parameters` text: line breaks and other
/// control characters (NUL included, which a tEXt chunk may not hold)
/// become spaces. A1111-style readers split the text into lines, so a
/// prompt's own line break would let it write a `Negative prompt:` or a
/// settings line of its choosing; the `difflog` chunk keeps it exactly.
fn one_line(prompt: &str) -> String {
    prompt
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// The A1111 `parameters` text of an image.
pub fn parameters(i: &RecipeInput<'_>) -> String {
    let p = &i.prompts;
    let mut text = one_line(p.prompt);
    if let Some(n) = p.negative_prompt.filter(|n| !n.is_empty()) {
        text.push_str("\nNegative prompt: ");
        text.push_str(&one_line(n));
    }
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if let Some(steps) = i.params.get("num_inference_steps").and_then(Value::as_u64) {
        pairs.push(("Steps", steps.to_string()));
    }
    if let Some(s) = sampler_name(i.scheduler) {
        pairs.push(("Sampler", s));
    }
    if let Some(g) = i.params.get("guidance_scale").and_then(Value::as_f64) {
        pairs.push(("CFG scale", g.to_string()));
    }
    pairs.push(("Seed", i.seed.to_string()));
    pairs.push(("Size", format!("{}x{}", i.size.0, i.size.1)));
    if let Some(d) = i.weights_digest {
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        if hex.len() >= 10 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            pairs.push(("Model hash", hex[..10].to_string()));
        }
    }
    pairs.push(("Model", i.model_id.to_string()));
    for (label, text) in [
        ("Prompt 2", p.prompt_2),
        ("Negative prompt 2", p.negative_prompt_2),
        ("Prompt 3", p.prompt_3),
        ("Negative prompt 3", p.negative_prompt_3),
    ] {
        if let Some(t) = text {
            // JSON-quoted when it holds a line break: it stays one line.
            pairs.push((label, t.to_string()));
        }
    }
    let line: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect();
    text.push('\n');
    text.push_str(&line.join(", "));
    text
}

/// The call's prompt arguments: each image's own are its recipe's fields,
/// so a batch of many prompts is not copied into every image.
const PER_ROW: [&str; 6] = [
    "prompt",
    "negative_prompt",
    "prompt_2",
    "negative_prompt_2",
    "prompt_3",
    "negative_prompt_3",
];

/// difflog's JSON recipe of an image.
pub fn difflog_json(i: &RecipeInput<'_>) -> Value {
    let params: Map<String, Value> = i
        .params
        .iter()
        .filter(|(k, _)| !PER_ROW.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let p = &i.prompts;
    let mut v = json!({
        "run_id": i.run_id, "call": i.call, "row": i.row,
        "prompt": p.prompt, "negative_prompt": p.negative_prompt,
        "prompt_2": p.prompt_2, "negative_prompt_2": p.negative_prompt_2,
        "seed": i.seed, "width": i.size.0, "height": i.size.1,
        "model_id": i.model_id, "weights_digest": i.weights_digest,
        "scheduler": i.scheduler, "params": params,
    });
    // Only SD3's images have third prompts (added last): the other
    // families' recipes stay byte for byte as they were.
    if p.prompt_3.is_some() || p.negative_prompt_3.is_some() {
        v["prompt_3"] = json!(p.prompt_3);
        v["negative_prompt_3"] = json!(p.negative_prompt_3);
    }
    v
}

/// A text chunk to write: keyword, text, and whether it must be iTXt.
pub type TextChunk = (String, String, bool);

/// The keyword of a PNG's XMP packet (an iTXt chunk, uncompressed).
pub const XMP: &str = "XML:com.adobe.xmp";

/// IPTC's digital source type of an image a trained model made (text to
/// image, image to image).
pub const TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";
/// IPTC's digital source type of an image partly made by a trained model
/// (inpainting: the rest of the picture is the input's).
pub const COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA: &str =
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia";

/// The text chunks an image's PNG carries: A1111's `parameters`, difflog's
/// recipe, and an XMP packet saying, as IPTC asks, that a trained model
/// made the image (issue 36: readers that do not speak C2PA look there).
pub fn chunks(i: &RecipeInput<'_>) -> Vec<TextChunk> {
    let params = parameters(i);
    let latin1 = params.chars().all(|c| (c as u32) < 256);
    vec![
        (PARAMETERS.to_string(), params, !latin1),
        (DIFFLOG.to_string(), difflog_json(i).to_string(), true),
        xmp_chunk(i.params),
    ]
}

/// The XMP chunk of an image made with these arguments: what an image
/// without a recipe (from Python, a call given no seed) carries alone.
pub fn xmp_chunk(params: &Map<String, Value>) -> TextChunk {
    (XMP.to_string(), xmp_packet(source_type(params)), true)
}

/// IPTC's digital source type of an image made with these arguments: a
/// composite when a mask kept part of the input (inpainting).
pub fn source_type(params: &Map<String, Value>) -> &'static str {
    match params.get("mask_image") {
        Some(v) if !v.is_null() => COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
        _ => TRAINED_ALGORITHMIC_MEDIA,
    }
}

/// The XMP packet of a generated image: IPTC's digital source type and
/// difflog as the creator tool (no version or date: a replayed image must
/// carry the same bytes).
pub fn xmp_packet(source_type: &str) -> String {
    format!(
        concat!(
            "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>",
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">",
            "<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">",
            "<rdf:Description rdf:about=\"\"",
            " xmlns:Iptc4xmpExt=\"http://iptc.org/std/Iptc4xmpExt/2008-02-29/\"",
            " xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"",
            " Iptc4xmpExt:DigitalSourceType=\"{}\"",
            " xmp:CreatorTool=\"difflog\"/>",
            "</rdf:RDF></x:xmpmeta><?xpacket end=\"r\"?>"
        ),
        source_type
    )
}

/// Every text chunk of a PNG (tEXt, zTXt, iTXt), keyword and text, in the
/// order the decoder gives them; an error names what is wrong with the file.
pub fn read_text_chunks(png_bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_ignore_text_chunk(false);
    let reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let info = reader.info();
    let mut out = Vec::new();
    // One budget for all text, compressed chunks inflated within what is
    // left of it: a few hundred KB of zTXt could otherwise inflate to GBs.
    let mut left = MAX_TEXT_BYTES;
    let over = || {
        format!(
            "its text chunks hold more than {} MiB of text (a compression bomb?): not read",
            MAX_TEXT_BYTES >> 20
        )
    };
    let mut take = |keyword: &str, text: String, left: &mut usize| -> Result<(), String> {
        *left = left
            .checked_sub(text.len() + keyword.len())
            .ok_or_else(over)?;
        out.push((keyword.to_string(), text));
        Ok(())
    };
    for t in &info.uncompressed_latin1_text {
        take(&t.keyword, t.text.clone(), &mut left)?;
    }
    // A chunk that does not fit in what is left is the budget's end; a
    // chunk that does not inflate at all is skipped, as before.
    let too_big = |e: &png::DecodingError| e.to_string().contains("decompression space");
    // zTXt and iTXt alike (two types with the same two methods).
    macro_rules! inflated {
        ($chunks:expr) => {
            for t in $chunks {
                let mut t = t.clone();
                match t.decompress_text_with_limit(left + 1) {
                    Err(e) if too_big(&e) => return Err(over()),
                    Err(_) => continue,
                    Ok(()) => {}
                }
                if let Ok(text) = t.get_text() {
                    take(&t.keyword, text, &mut left)?;
                }
            }
        };
    }
    inflated!(&info.compressed_latin1_text);
    inflated!(&info.utf8_text);
    Ok(out)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(params: &'a Map<String, Value>, scheduler: &'a Value) -> RecipeInput<'a> {
        RecipeInput {
            run_id: "r1",
            call: 2,
            row: 3,
            prompts: RowPrompts {
                prompt: "a cat, sitting",
                negative_prompt: Some("blurry"),
                ..RowPrompts::default()
            },
            seed: 42,
            size: (64, 48),
            params,
            model_id: "tiny",
            weights_digest: Some("sha256:0123456789abcdef"),
            scheduler,
        }
    }

    #[test]
    fn parameters_are_written_as_a1111_writes_them() {
        let params = Map::from_iter([
            ("num_inference_steps".to_string(), json!(20)),
            ("guidance_scale".to_string(), json!(7.5)),
        ]);
        let sched = json!({"name": "euler-a"});
        let text = parameters(&input(&params, &sched));
        assert_eq!(
            text,
            "a cat, sitting\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, \
             Seed: 42, Size: 64x48, Model hash: 0123456789, Model: tiny"
        );
        // A value with a comma or colon is quoted, as A1111's `quote` does.
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("plain"), "plain");
    }

    #[test]
    fn a_prompt_cannot_write_lines_of_its_own() {
        // Issue 32, item 14: A1111-style readers split the text into lines.
        let params = Map::new();
        let sched = json!({});
        let mut i = input(&params, &sched);
        i.prompts.prompt = "a cat\nNegative prompt: a dog\r\nSteps: 999, Seed: 1, Model: evil\0";
        i.prompts.negative_prompt = Some("blurry\u{2028}Seed: 2");
        i.prompts.prompt_2 = Some("two\nlines");
        let text = parameters(&i);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(
            lines[0],
            "a cat Negative prompt: a dog  Steps: 999, Seed: 1, Model: evil "
        );
        assert_eq!(lines[1], "Negative prompt: blurry Seed: 2");
        assert!(
            lines[2].starts_with("Seed: 42, Size: 64x48"),
            "{}",
            lines[2]
        );
        assert!(
            lines[2].ends_with("Prompt 2: \"two\\nlines\""),
            "{}",
            lines[2]
        );
        assert!(!text.contains('\0'));
        // The difflog chunk keeps the prompt exactly.
        assert_eq!(difflog_json(&i)["prompt"], json!(i.prompts.prompt));
    }
}
