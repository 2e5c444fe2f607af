//! Other tools' generation metadata (issue 35): most images on a diffusion
//! box come from ComfyUI, Automatic1111 / Forge, InvokeAI, Fooocus,
//! SwarmUI or NovelAI, each of which writes how an image was made into the
//! PNG's text chunks in a format of its own. This module reads those
//! chunks, says which tool wrote them, and puts what they say into one
//! schema ([`Generation`]) — prompt, negative prompt, seed, steps, sampler,
//! scheduler, CFG, size, model and hash, LoRAs, denoise — keeping nothing
//! it had to guess: what it cannot resolve it names in
//! [`Generation::unresolved`].
//!
//! The text comes from files anyone can make: every reader here is
//! bounded (the chunks' total size is capped where they are read, JSON
//! nesting by the parser, graph walks by [`MAX_HOPS`]) and a malformed
//! value is left out, never a panic.

mod a1111;
mod apps;
#[cfg(feature = "provenance")]
pub mod c2pa;
mod comfyui;
pub mod exif;
pub mod stealth;
pub mod xmp;

use serde::Serialize;
use serde_json::Value;

/// The most links followed from one node of a ComfyUI graph.
pub const MAX_HOPS: usize = 64;

/// How an image was made, as the tool that made it says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Generation {
    /// The tool: `AUTOMATIC1111`, `Forge`, `ComfyUI`, `InvokeAI`,
    /// `Fooocus`, `SwarmUI`, `NovelAI` or `difflog`.
    pub tool: String,
    /// The tool's version, where it writes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// The prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The negative prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// The seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Denoising steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// The sampler, in the tool's own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// The scheduler (noise schedule), in the tool's own words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// The guidance scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg: Option<f64>,
    /// Width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// Height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// The model (checkpoint) name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model's hash, as the tool writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_hash: Option<String>,
    /// LoRAs applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<Lora>,
    /// Denoising strength (image to image, inpainting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denoise: Option<f64>,
    /// What the metadata holds but could not be resolved, said plainly.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// Read from the copy hidden in the pixels (its signature, e.g.
    /// `stealth_pngcomp`), the file's text saying nothing; see [`stealth`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_copy: Option<String>,
}

/// A LoRA as a tool names it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lora {
    /// Its name (file name or the tool's name for it).
    pub name: String,
    /// Its weight (on the model, where model and text encoder differ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Its hash, where the tool writes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The text an image file carries, as (keyword, text) pairs: a PNG's text
/// chunks, a JPEG's or WebP's EXIF texts and comments (see [`exif`]).
pub fn texts_of_file(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    match exif::format_of(bytes) {
        Some(exif::Format::Png) => crate::recipe::read_text_chunks(bytes),
        Some(f) => Ok(exif::texts(bytes, f)),
        None => Err("not a PNG, JPEG or WebP file".into()),
    }
}

/// How an image file says it was made: its text (`texts`, from
/// [`texts_of_file`]) first; when no tool's metadata is there, the copy a
/// PNG may hide in its pixels ([`stealth`]: NovelAI's in the alpha
/// channel), if it can be read.
pub fn generation_of_file(bytes: &[u8], texts: &[(String, String)]) -> Option<Generation> {
    read(texts).or_else(|| generation_of_hidden(&stealth::read_hidden(bytes).ok()??))
}

/// What a copy hidden in the pixels says of how the image was made, with
/// its signature named ([`Generation::hidden_copy`]).
pub fn generation_of_hidden(hidden: &stealth::Hidden) -> Option<Generation> {
    read(&hidden.texts).map(|g| Generation {
        hidden_copy: Some(hidden.signature.clone()),
        ..g
    })
}

/// The text of the chunk named `keyword`, if any.
fn chunk<'a>(chunks: &'a [(String, String)], keyword: &str) -> Option<&'a str> {
    chunks
        .iter()
        .find(|(k, _)| k == keyword)
        .map(|(_, t)| t.as_str())
}

/// A chunk's JSON object, if it is one.
fn json_chunk(
    chunks: &[(String, String)],
    keyword: &str,
) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str(chunk(chunks, keyword)?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Reads the generation metadata among a PNG's text chunks (keyword,
/// text), saying which tool wrote it; `None` when no tool's is there.
pub fn read(chunks: &[(String, String)]) -> Option<Generation> {
    let chunks: Vec<(String, String)> = chunks
        .iter()
        .map(|(k, t)| (k.clone(), utf8_fallback(t)))
        .collect();
    let chunks = &chunks[..];
    if let Some(recipe) = json_chunk(chunks, crate::recipe::DIFFLOG) {
        return Some(apps::difflog(
            &recipe,
            chunk(chunks, crate::recipe::PARAMETERS),
        ));
    }
    if let Some(graph) = json_chunk(chunks, "prompt") {
        return Some(comfyui::read(&graph));
    }
    if let Some(m) = json_chunk(chunks, "invokeai_metadata") {
        return Some(apps::invokeai(&m));
    }
    let parameters = chunk(chunks, crate::recipe::PARAMETERS);
    if let Some(scheme) = chunk(chunks, "fooocus_scheme") {
        return match (scheme, json_chunk(chunks, crate::recipe::PARAMETERS)) {
            ("fooocus", Some(m)) => Some(apps::fooocus(&m)),
            _ => parameters.map(|p| a1111::read(p, Some("Fooocus"))),
        };
    }
    if let Some(m) = json_chunk(chunks, crate::recipe::PARAMETERS) {
        if let Some(Value::Object(p)) = m.get("sui_image_params") {
            return Some(apps::swarmui(p, m.get("sui_models")));
        }
    }
    if let (Some(comment), Some(software)) =
        (json_chunk(chunks, "Comment"), chunk(chunks, "Software"))
    {
        if software.starts_with("NovelAI") {
            return Some(apps::novelai(
                &comment,
                chunk(chunks, "Description"),
                chunk(chunks, "Source"),
            ));
        }
    }
    parameters.map(|p| a1111::read(p, None))
}

/// The text of a tEXt chunk as the tool meant it: PNG says tEXt is
/// Latin-1, but some tools write UTF-8 bytes there. A text whose Latin-1
/// bytes are valid UTF-8 with more than ASCII in it is read as UTF-8.
fn utf8_fallback(text: &str) -> String {
    if text.is_ascii() || text.chars().any(|c| (c as u32) > 255) {
        return text.to_string();
    }
    let bytes: Vec<u8> = text.chars().map(|c| c as u32 as u8).collect();
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(_) => text.to_string(),
    }
}

/// A JSON value as a whole number ≥ 0: a number, or a string of digits
/// (Fooocus writes its seed as text).
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON value as a number: a number, or a string that is one.
fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

/// A JSON value as a non-empty string.
fn as_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_written_as_latin1_is_read_as_utf8() {
        // "café" written as UTF-8 bytes in a tEXt chunk, decoded as Latin-1.
        let latin1: String = "café".bytes().map(char::from).collect();
        assert_eq!(utf8_fallback(&latin1), "café");
        // Real Latin-1 stays as it is.
        assert_eq!(utf8_fallback("café"), "café");
        assert_eq!(utf8_fallback("plain"), "plain");
    }

    /// Random graphs (links anywhere, to missing nodes, to themselves),
    /// random settings lines and random bytes behind each image signature:
    /// every reading ends, none panics.
    #[test]
    fn random_input_is_read_without_a_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(35);
        let classes = [
            "KSampler",
            "CLIPTextEncode",
            "LoraLoader",
            "SaveImage",
            "VAEDecode",
            "X",
        ];
        let keys = [
            "model",
            "positive",
            "negative",
            "latent_image",
            "samples",
            "images",
            "conditioning",
            "text",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "width",
            "height",
        ];
        for _ in 0..300 {
            let mut graph = serde_json::Map::new();
            let n = rng.random_range(1..12);
            for id in 0..n {
                let mut inputs = serde_json::Map::new();
                for _ in 0..rng.random_range(0..6) {
                    let key = keys[rng.random_range(0..keys.len())];
                    let v = match rng.random_range(0..4) {
                        0 => serde_json::json!([
                            rng.random_range(0..n + 2).to_string(),
                            rng.random_range(0..3)
                        ]),
                        1 => serde_json::json!(rng.random_range(-5i64..100)),
                        2 => serde_json::json!("a text"),
                        _ => serde_json::json!([1, 2, 3]),
                    };
                    inputs.insert(key.into(), v);
                }
                let class = classes[rng.random_range(0..classes.len())];
                graph.insert(
                    id.to_string(),
                    serde_json::json!({"class_type": class, "inputs": inputs}),
                );
            }
            let text = serde_json::Value::Object(graph).to_string();
            let _ = read(&[("prompt".into(), text)]);
            let line: String = (0..rng.random_range(0..200))
                .map(|_| {
                    [' ', ',', ':', '"', '\\', 'a', 'B', '1', '\n', '<'][rng.random_range(0..10)]
                })
                .collect();
            let _ = read(&[("parameters".into(), line)]);
            for sig in [
                &b"\x89PNG\r\n\x1a\n"[..],
                &[0xff, 0xd8, 0xff],
                b"RIFF\0\0\0\0WEBP",
            ] {
                let mut bytes = sig.to_vec();
                bytes.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>()));
                if let Ok(chunks) = texts_of_file(&bytes) {
                    let _ = read(&chunks);
                }
            }
        }
    }

    #[test]
    fn numbers_come_from_numbers_and_digit_strings_only() {
        assert_eq!(as_u64(&serde_json::json!("123")), Some(123));
        assert_eq!(as_u64(&serde_json::json!(7.0)), Some(7));
        assert_eq!(as_u64(&serde_json::json!(-1)), None);
        assert_eq!(as_u64(&serde_json::json!(1.5)), None);
        assert_eq!(as_f64(&serde_json::json!("NaN")), None);
        assert_eq!(as_f64(&serde_json::json!("4.5")), Some(4.5));
    }
}
