//! Signing a generated PNG with a C2PA manifest, offline: the CAI's own
//! implementation (the `c2pa` crate, without its network features) makes
//! and signs the claim with the key and certificate chain configured — none
//! is built in, and no time-stamp server is asked.
//!
//! The manifest says what the recipe chunks of the same file say, so that a
//! reader that speaks only C2PA learns it too: a `c2pa.created` action (or,
//! for image to image and inpainting, `c2pa.opened` of the input, kept as a
//! `parentOf` ingredient, then `c2pa.edited`) with IPTC's digital source
//! type and difflog with the model (id and weights digest) as the software
//! agent, and an `org.difflog.recipe` assertion with the SHA-256 of the
//! image's difflog recipe. C2PA keeps a PNG's manifest in a `caBX` chunk
//! (difflog puts it last, before the end chunk), and its hard binding
//! hashes every other byte: signing is the last step, after the recipe
//! chunks and the watermark.
//!
//! A signature has random parts (the claim's UUIDs, ECDSA's nonce): the
//! same pixels signed twice give two files. What is compared across a
//! replay is the file without its `caBX` chunk ([`without_manifest`]).

use crate::error::{Error, Result};
use serde_json::json;
use sha2::Digest;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The claim generator's name.
pub const GENERATOR: &str = "difflog";
/// The label of difflog's own assertion: the recipe's digest and where the
/// image was recorded.
pub const RECIPE_ASSERTION: &str = "org.difflog.recipe";

/// A signer, loaded and checked.
pub struct Signing {
    signer: c2pa::BoxedSigner,
    context: Arc<c2pa::Context>,
    name: String,
    /// The manifest size of each shape of manifest signed so far.
    sizes: Mutex<HashMap<Shape, usize>>,
}

/// What a manifest's size follows: its definition's length and its
/// ingredients' (see [`Signing::sign_png`]).
type Shape = (usize, Vec<usize>);

/// The most shapes whose size is kept.
const MAX_SHAPES: usize = 256;

/// The PNG chunk type of a C2PA manifest.
const MANIFEST_CHUNK: &[u8; 4] = b"caBX";

/// What a generated image's manifest states: the call that made it and,
/// when the image carries one, its difflog recipe's digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The model's id.
    pub model_id: String,
    /// The weights' digest, when known.
    pub weights_digest: Option<String>,
    /// SHA-256 (hex) of the image's difflog recipe, as its chunk holds it
    /// (`None`: the image has no recipe, as a call given no seed).
    pub recipe_sha256: Option<String>,
    /// The run's id.
    pub run_id: String,
    /// The call.
    pub call: u64,
    /// The row.
    pub row: u64,
    /// IPTC's digital source type.
    pub source_type: String,
}

impl Facts {
    /// SHA-256 (hex) of the difflog recipe among these recipe chunks (see
    /// [`crate::recipe::chunks`]), if there is one.
    pub fn recipe_digest(chunks: &[crate::recipe::TextChunk]) -> Option<String> {
        let text = &chunks.iter().find(|c| c.0 == crate::recipe::DIFFLOG)?.1;
        Some(crate::format::sha256_hex(text.as_bytes()))
    }

    /// The manifest's title, naming the file as `what` (image, video).
    fn title(&self, what: &str) -> String {
        format!(
            "difflog run {}, call {}, {what} {}",
            self.run_id, self.call, self.row
        )
    }
}

/// An image (or video) a generated file was made from, kept in its
/// manifest as an ingredient (with the credentials it carries, if any).
#[derive(Debug, Clone, Copy)]
pub struct Ingredient<'a> {
    /// Its title.
    pub title: &'a str,
    /// Its PNG (an animated one for a video), JPEG or WebP bytes.
    pub bytes: &'a [u8],
    /// Whether it is the input the image was made from (`parentOf`; image
    /// to image, inpainting) or a mask the model was given (`inputTo`).
    pub parent: bool,
}

impl<'a> Ingredient<'a> {
    /// The input the generated file was made from.
    pub fn parent(title: &'a str, bytes: &'a [u8]) -> Ingredient<'a> {
        Ingredient {
            title,
            bytes,
            parent: true,
        }
    }

    /// An inpainting call's mask.
    pub fn mask(title: &'a str, bytes: &'a [u8]) -> Ingredient<'a> {
        Ingredient {
            title,
            bytes,
            parent: false,
        }
    }
}

impl Signing {
    /// The signer of a `[sign]` table; paths are relative to `dir`.
    pub(crate) fn from_table(
        t: &toml::Table,
        dir: &Path,
        bad: &dyn Fn(String) -> Error,
    ) -> Result<Signing> {
        for key in t.keys() {
            if !["certificate_chain", "private_key", "algorithm"].contains(&key.as_str()) {
                return Err(bad(format!(
                    "[sign] has no setting {key:?}: certificate_chain, private_key, algorithm"
                )));
            }
        }
        let chain = super::config_path(dir, t, "certificate_chain").map_err(bad)?;
        let key = super::config_path(dir, t, "private_key").map_err(bad)?;
        let alg = match t.get("algorithm") {
            None => c2pa::SigningAlg::Es256,
            Some(toml::Value::String(s)) => match s.as_str() {
                "es256" | "es384" | "es512" | "ps256" | "ps384" | "ps512" | "ed25519" => {
                    s.parse().map_err(|_| bad(format!("algorithm {s:?}")))?
                }
                _ => {
                    return Err(bad(format!(
                    "algorithm {s:?}: expected es256, es384, es512, ps256, ps384, ps512 or ed25519"
                )))
                }
            },
            Some(_) => return Err(bad("algorithm must be a string".into())),
        };
        let chain_pem = crate::redact::read_config_file(
            &chain,
            "certificate chain",
            super::MAX_PEM_BYTES,
            false,
        )?;
        let key_pem = crate::redact::read_private_file(&key, "private key", super::MAX_PEM_BYTES)?;
        // Never printed; should a message ever quote a line of it, that
        // line is redacted.
        for line in key_pem.lines().map(str::trim) {
            if line.len() >= 16 && !line.starts_with("-----") {
                crate::redact::register_secret(None, line);
            }
        }
        Signing::new(&chain_pem, &key_pem, alg).map_err(|why| {
            Error::file(
                &key,
                format!("cannot sign with it and {}: {why}", chain.display()),
            )
        })
    }

    /// A signer from a PEM chain (signer first) and a PKCS#8 PEM key,
    /// tried on a test image whose manifest must then validate.
    pub fn new(
        chain_pem: &str,
        key_pem: &str,
        alg: c2pa::SigningAlg,
    ) -> std::result::Result<Signing, String> {
        let signer =
            c2pa::create_signer::from_keys(chain_pem.as_bytes(), key_pem.as_bytes(), alg, None)
                .map_err(|e| e.to_string())?;
        let signer = super::es256::Es256::wrap(signer, key_pem);
        let context = c2pa::Context::new()
            .with_settings(crate::meta::c2pa::offline_settings()?)
            .map_err(|e| format!("the C2PA settings: {e}"))?;
        let mut s = Signing {
            signer,
            context: Arc::new(context),
            name: String::new(),
            sizes: Mutex::new(HashMap::new()),
        };
        let mut png = Vec::new();
        image::RgbImage::new(8, 8)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        let facts = Facts {
            model_id: "none".into(),
            weights_digest: None,
            recipe_sha256: None,
            run_id: "none".into(),
            call: 0,
            row: 0,
            source_type: crate::recipe::TRAINED_ALGORITHMIC_MEDIA.into(),
        };
        let signed = s.sign_png(&png, &facts, &[])?;
        let read = crate::meta::c2pa::read(&signed.bytes, None)?
            .ok_or("the test image carries no manifest once signed")?;
        if read.state == "invalid" {
            return Err(format!(
                "a manifest it signs does not validate: {}",
                read.failures.join("; ")
            ));
        }
        s.name = read
            .signer
            .map(|g| {
                [g.common_name, g.issuer]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        Ok(s)
    }

    /// Who signs, as the certificate names them (common name, organisation).
    pub fn signer_name(&self) -> &str {
        &self.name
    }

    /// `png` with a signed manifest stating `facts`; `ingredients` are the
    /// input image of an image-to-image or inpainting call and the
    /// inpainting mask, or the input video of a video-to-video call, whose
    /// own credentials, if any, are kept.
    pub fn sign_png(
        &self,
        png: &[u8],
        facts: &Facts,
        ingredients: &[Ingredient<'_>],
    ) -> std::result::Result<Signed, String> {
        let chunk = guarded(|| self.sign_with(png, facts, ingredients))?;
        let mut bytes = Vec::with_capacity(png.len() + chunk.bytes.len());
        bytes.extend_from_slice(&png[..chunk.at]);
        bytes.extend_from_slice(&chunk.bytes);
        bytes.extend_from_slice(&png[chunk.at..]);
        Ok(Signed {
            bytes,
            sha256: chunk.sha256,
        })
    }

    /// [`Signing::sign_png`] on the file itself: `png` gets its manifest
    /// where it is (only its end chunk moves; issue 36's cost: no copy of
    /// the file), and the SHA-256 of the signed file is returned; on an
    /// error `png` is as it was.
    pub fn sign_png_in(
        &self,
        png: &mut Vec<u8>,
        facts: &Facts,
        ingredients: &[Ingredient<'_>],
    ) -> std::result::Result<[u8; 32], String> {
        let chunk = guarded(|| self.sign_with(png, facts, ingredients))?;
        png.splice(chunk.at..chunk.at, chunk.bytes);
        Ok(chunk.sha256)
    }

    /// `mp4` (a generated video, as the recorder writes it) with a signed
    /// manifest stating `facts`: the CAI's own BMFF writer puts it in a
    /// `uuid` box after the file type box and binds every other box by
    /// its hash (`c2pa.hash.bmff`), moving the sample offsets that follow;
    /// `ingredients` as for [`Signing::sign_png`].
    pub fn sign_mp4(
        &self,
        mp4: &[u8],
        facts: &Facts,
        ingredients: &[Ingredient<'_>],
    ) -> std::result::Result<Signed, String> {
        guarded(|| {
            let definition = definition(facts, ingredients, MP4);
            let fail = |e: c2pa::Error| e.to_string();
            let mut builder = c2pa::Builder::from_shared_context(&self.context)
                .with_definition(definition.as_str())
                .map_err(fail)?;
            add_ingredients(&mut builder, ingredients)?;
            let mut out = Cursor::new(Vec::with_capacity(mp4.len() + (64 << 10)));
            builder
                .sign(self.signer.as_ref(), MP4, &mut Cursor::new(mp4), &mut out)
                .map_err(fail)?;
            let bytes = out.into_inner();
            let sha256 = sha2::Sha256::digest(&bytes).into();
            Ok(Signed { bytes, sha256 })
        })
    }

    /// The manifest chunk for `png` and where it goes.
    fn sign_with(
        &self,
        png: &[u8],
        f: &Facts,
        ingredients: &[Ingredient<'_>],
    ) -> std::result::Result<Chunk, String> {
        let definition = definition(f, ingredients, PNG);
        let fail = |e: c2pa::Error| e.to_string();
        let mut builder = c2pa::Builder::from_shared_context(&self.context)
            .with_definition(definition.as_str())
            .map_err(fail)?;
        // The hash binding's room, which signing pads the binding to: here
        // so that a manifest whose size is known needs no placeholder. Not
        // the CAI placeholder's ten small exclusions but the one exclusion
        // and the hash the binding has, each number as large as CBOR takes:
        // the CAI pads one byte at a time, serialising the binding again
        // for each (a tenth of signing's time with the ten).
        let mut room = c2pa::assertions::DataHash::new("jumbf manifest", "sha256");
        let most = i64::MAX as u64;
        room.add_exclusion(c2pa::HashRange::new(most, most));
        room.set_hash(vec![0; 32]);
        builder
            .add_assertion(c2pa::assertions::labels::DATA_HASH, &room)
            .map_err(fail)?;
        add_ingredients(&mut builder, ingredients)?;
        // The manifest goes last, just before the end chunk (`IEND`). Its
        // hard binding is the SHA-256 of every other byte, that is of the
        // PNG as it was encoded, and the run's content address is the
        // SHA-256 of the signed file: both start with the same bytes, so
        // one pass over them serves both (issue 36's cost). The C2PA
        // specification recommends the chunk before the pixels for readers
        // that stream, but allows it anywhere; the CAI's reader finds it
        // anywhere.
        let at = end_chunk(png).ok_or("not a PNG that ends with its end chunk (IEND)")?;
        let mut before = sha2::Sha256::new();
        before.update(&png[..at]);
        let hash = before.clone().chain_update(&png[at..]).finalize().to_vec();
        let shape = (
            definition.len(),
            ingredients.iter().map(|i| i.bytes.len()).collect(),
        );
        let known = self.sizes.lock().ok().and_then(|s| s.get(&shape).copied());
        let mut size = match known {
            Some(size) => size,
            None => self.placeholder(&mut builder)?,
        };
        let mut manifest = self.manifest(&mut builder, at, size, &hash)?;
        if manifest.len() != size && known.is_some() {
            size = self.placeholder(&mut builder)?;
            manifest = self.manifest(&mut builder, at, size, &hash)?;
        }
        if manifest.len() != size {
            return Err(format!(
                "the signed manifest ({} bytes) does not fit the {size} bytes reserved for it",
                manifest.len(),
            ));
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            if sizes.len() >= MAX_SHAPES {
                sizes.clear();
            }
            sizes.insert(shape, size);
        }
        let sha256 = before
            .chain_update(&manifest)
            .chain_update(&png[at..])
            .finalize()
            .into();
        Ok(Chunk {
            at,
            bytes: manifest,
            sha256,
        })
    }

    /// The size of the `caBX` chunk of the manifest `builder` makes: its
    /// placeholder's.
    fn placeholder(&self, builder: &mut c2pa::Builder) -> std::result::Result<usize, String> {
        builder
            .data_hashed_placeholder(self.signer.reserve_size(), PNG)
            .map(|p| p.len())
            .map_err(|e| e.to_string())
    }

    /// The `caBX` chunk of the manifest `builder` makes and signs, bound to
    /// a PNG of SHA-256 `hash` (without the chunk) with the chunk's `size`
    /// bytes at `at`. The chunk is framed here (its CRC by `crc32fast`),
    /// not by the CAI's PNG writer, which is slower at it.
    fn manifest(
        &self,
        builder: &mut c2pa::Builder,
        at: usize,
        size: usize,
        hash: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let mut binding = c2pa::assertions::DataHash::new("jumbf manifest", "sha256");
        binding.add_exclusion(c2pa::HashRange::new(at as u64, size as u64));
        binding.set_hash(hash.to_vec());
        let jumbf = builder
            .sign_data_hashed_embeddable(self.signer.as_ref(), &binding, "application/c2pa")
            .map_err(|e| e.to_string())?;
        let len = u32::try_from(jumbf.len()).map_err(|_| "the manifest is too large")?;
        let mut chunk = Vec::with_capacity(jumbf.len() + 12);
        chunk.extend_from_slice(&len.to_be_bytes());
        chunk.extend_from_slice(MANIFEST_CHUNK);
        chunk.extend_from_slice(&jumbf);
        let crc = crc32fast::hash(&chunk[4..]);
        chunk.extend_from_slice(&crc.to_be_bytes());
        Ok(chunk)
    }
}

/// The manifest definition of a generated file of media type `format`:
/// what made it (`c2pa.created`, or `c2pa.opened` of its input then
/// `c2pa.edited`), with IPTC's digital source type and difflog with the
/// model as the software agent, and difflog's recipe assertion.
fn definition(f: &Facts, ingredients: &[Ingredient<'_>], format: &str) -> String {
    let agent = json!({
        "name": GENERATOR,
        "version": env!("CARGO_PKG_VERSION"),
        "org.difflog.model": f.model_id,
        "org.difflog.weights_digest": f.weights_digest,
    });
    let made = |action: &str| {
        json!({
            "action": action,
            "digitalSourceType": f.source_type,
            "softwareAgent": agent,
        })
    };
    let ids = |parent: bool| -> Vec<String> {
        (0..ingredients.len())
            .filter(|&i| ingredients[i].parent == parent)
            .map(ingredient_id)
            .collect()
    };
    let mut edited = made("c2pa.edited");
    let masks = ids(false);
    if !masks.is_empty() {
        edited["parameters"] = json!({ "ingredientIds": masks });
    }
    let actions = match ids(true) {
        parents if parents.is_empty() => vec![made("c2pa.created")],
        parents => vec![
            json!({"action": "c2pa.opened", "parameters": {"ingredientIds": parents}}),
            edited,
        ],
    };
    let mut recipe = json!({"run_id": f.run_id, "call": f.call, "row": f.row});
    if let Some(digest) = &f.recipe_sha256 {
        recipe["recipe_sha256"] = json!(digest);
    }
    json!({
        "title": f.title(if format == MP4 { "video" } else { "image" }),
        "format": format,
        "claim_generator_info": [{"name": GENERATOR, "version": env!("CARGO_PKG_VERSION")}],
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": actions}},
            {"label": RECIPE_ASSERTION, "data": recipe},
        ],
    })
    .to_string()
}

/// `sign()`, a panic inside it made an error (issue 36: the CAI's builder
/// does the signing; a panic there is this file's failure, not the writer
/// thread's).
fn guarded<T>(
    sign: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(sign))
        .unwrap_or_else(|_| Err("the C2PA signer failed".into()))
}

/// Adds `ingredients` to the manifest `builder` makes, each with the
/// credentials it carries, labelled as the actions name them.
fn add_ingredients(
    builder: &mut c2pa::Builder,
    ingredients: &[Ingredient<'_>],
) -> std::result::Result<(), String> {
    for (i, ingredient) in ingredients.iter().enumerate() {
        let mime = match crate::meta::exif::format_of(ingredient.bytes) {
            Some(crate::meta::exif::Format::Jpeg) => "image/jpeg",
            Some(crate::meta::exif::Format::Webp) => "image/webp",
            _ => "image/png",
        };
        let relationship = if ingredient.parent {
            "parentOf"
        } else {
            "inputTo"
        };
        let definition = json!({"title": ingredient.title, "relationship": relationship, "label": ingredient_id(i)});
        builder
            .add_ingredient_from_stream(
                definition.to_string(),
                mime,
                &mut Cursor::new(ingredient.bytes),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The label of a manifest's `i`th ingredient, which its actions name.
fn ingredient_id(i: usize) -> String {
    format!("ingredient{i}")
}

/// A signed PNG and its SHA-256 (the run's content address), found in the
/// same pass as the manifest's hash binding.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The file.
    pub bytes: Vec<u8>,
    /// The SHA-256 of `bytes`.
    pub sha256: [u8; 32],
}

/// A PNG's manifest chunk, where it goes (before the end chunk) and the
/// SHA-256 of the PNG with it there.
struct Chunk {
    at: usize,
    bytes: Vec<u8>,
    sha256: [u8; 32],
}

/// The media type of a signed image.
const PNG: &str = "image/png";
/// …and of a signed video.
const MP4: &str = "video/mp4";

/// The bytes every PNG starts with.
const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The end chunk every PNG's chunks end with: no data, `IEND`, its CRC.
const END_CHUNK: &[u8; 12] = b"\0\0\0\0IEND\xae\x42\x60\x82";

/// Where a PNG's end chunk starts: the file's last 12 bytes, when they are
/// it (as they are in every PNG difflog encodes).
fn end_chunk(png: &[u8]) -> Option<usize> {
    let at = png.len().checked_sub(END_CHUNK.len())?;
    (png.starts_with(SIGNATURE) && at > SIGNATURE.len() && png[at..] == END_CHUNK[..]).then_some(at)
}

/// A PNG's bytes without its C2PA manifest (`caBX` chunks): `None` when it
/// has none, or is not a PNG whose chunks can be walked to its end.
pub fn without_manifest(png: &[u8]) -> Option<Vec<u8>> {
    let rest = png.strip_prefix(SIGNATURE)?;
    let mut out = Vec::with_capacity(png.len());
    out.extend_from_slice(SIGNATURE);
    let mut at = 0;
    let mut found = false;
    while at < rest.len() {
        let head = rest.get(at..at + 8)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = rest.get(at..end)?;
        if &head[4..8] == MANIFEST_CHUNK {
            found = true;
        } else {
            out.extend_from_slice(chunk);
        }
        at = end;
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_goes_before_the_end_chunk_of_a_png_that_ends_with_one() {
        let mut png = Vec::new();
        image::RgbImage::new(4, 4)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(end_chunk(&png), Some(png.len() - 12));
        // Bytes after the end chunk, a cut file, or no PNG signature: none.
        let mut trailing = png.clone();
        trailing.push(0);
        assert_eq!(end_chunk(&trailing), None);
        assert_eq!(end_chunk(&png[..png.len() - 1]), None);
        assert_eq!(end_chunk(&png[8..]), None);
        assert_eq!(end_chunk(&png[..8]), None);
        assert_eq!(end_chunk(b""), None);
    }
}
