//! Content Credentials (C2PA manifests) in PNG, JPEG and WebP files, read
//! and validated offline: OpenAI's, Adobe's, Google's and Microsoft's image
//! generators sign what they make, and the EU AI Act asks for such marks;
//! an image that carries one says who signed how it was made, and whether
//! the file is still the one they signed. The CAI's own implementation
//! (the `c2pa` crate, built without HTTP: no remote manifest, OCSP answer
//! or time stamp is ever fetched) does the reading and the cryptography;
//! this module asks it and puts the answer into a few plain fields.
//!
//! Validation: the claim's signature, the hard binding (the file's bytes
//! hash to what the claim says) and the signing certificate's profile and
//! validity; "trusted" only when the certificate chains to one of the trust
//! anchors given (PEM), for no anchors are built in. A file that makes the
//! reader fail (or panic) gets an error naming that, never a crash.

use serde::Serialize;
use std::io::Cursor;

/// The largest trust-anchor bundle read (PEM).
pub const MAX_ANCHORS: u64 = 4 << 20;

/// What an image's Content Credentials say, and whether they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credentials {
    /// `trusted` (valid, and the signer chains to a trust anchor given),
    /// `valid` (the signature and the hash binding hold), or `invalid`.
    pub state: String,
    /// What failed, as C2PA's status codes with the reader's explanation
    /// (`signingCredential.untrusted` alone leaves a manifest valid).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The active manifest's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The claim generator: each of its name and version.
    pub claim_generator: Vec<String>,
    /// Its actions, in order.
    pub actions: Vec<Action>,
    /// Its ingredients (the images it was made from).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingredients: Vec<Ingredient>,
    /// Who signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<Signer>,
    /// Manifests in the store (earlier ones: the ingredients').
    pub manifests: usize,
}

/// One action of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// E.g. `c2pa.created`, `c2pa.edited`, `c2pa.opened`.
    pub action: String,
    /// IPTC's digital source type, an IRI of its newscodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digital_source_type: Option<String>,
    /// The software that took it, as the manifest names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_agent: Option<String>,
}

/// One ingredient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ingredient {
    /// Its title (a file name, usually).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `parentOf`, `componentOf` or `inputTo`.
    pub relationship: String,
    /// Whether it carried Content Credentials of its own.
    pub has_credentials: bool,
}

/// The signature's maker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// The certificate's organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The certificate's common name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// The signing algorithm (`es256`, `ed25519`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// When it was signed, from a time stamp (none without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// A value the reader serialises, as the text it serialises to.
fn as_text(v: &impl Serialize) -> Option<String> {
    match serde_json::to_value(v).ok()? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The MIME type C2PA's reader takes for `bytes`.
fn mime(bytes: &[u8]) -> Option<&'static str> {
    // An ISO media file starts with its file type box (a video kept as MP4).
    if bytes.get(4..8) == Some(b"ftyp") {
        return Some("video/mp4");
    }
    match super::exif::format_of(bytes)? {
        super::exif::Format::Png => Some("image/png"),
        super::exif::Format::Jpeg => Some("image/jpeg"),
        super::exif::Format::Webp => Some("image/webp"),
    }
}

/// Reads and validates the Content Credentials of an image file (or an
/// MP4): `None`
/// when it carries none; `anchors` is a PEM bundle of the trust anchors a
/// signer must chain to for the credentials to be `trusted`.
pub fn read(bytes: &[u8], anchors: Option<&str>) -> Result<Option<Credentials>, String> {
    let Some(mime) = mime(bytes) else {
        return Ok(None);
    };
    // The reader is the CAI's; a file that makes it panic is a file it
    // cannot read, said as such.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_with(bytes, mime, anchors)
    }))
    .unwrap_or_else(|_| Err("its C2PA manifest made the reader fail".into()))
}

/// The CAI implementation's settings for difflog: nothing ever fetched (no
/// remote manifest, no OCSP answer), and no thumbnails (they need a feature
/// not built; off first, or every setting checked after warns).
pub fn offline_settings() -> Result<c2pa::Settings, String> {
    let setting = |e: c2pa::Error| format!("the C2PA settings: {e}");
    c2pa::Settings::new()
        .with_value("builder.thumbnail.enabled", false)
        .map_err(setting)?
        .with_value("verify.remote_manifest_fetch", false)
        .map_err(setting)?
        .with_value("verify.ocsp_fetch", false)
        .map_err(setting)
}

fn read_with(
    bytes: &[u8],
    mime: &str,
    anchors: Option<&str>,
) -> Result<Option<Credentials>, String> {
    let setting = |e: c2pa::Error| format!("the C2PA reader's settings: {e}");
    let mut settings = offline_settings()?;
    if let Some(pem) = anchors {
        settings = settings
            .with_value("trust.trust_anchors", pem.to_string())
            .map_err(|e| format!("the trust anchors given: {e}"))?;
    }
    let context = c2pa::Context::new()
        .with_settings(settings)
        .map_err(setting)?;
    let reader = match c2pa::Reader::from_context(context).with_stream(mime, Cursor::new(bytes)) {
        Ok(r) => r,
        Err(c2pa::Error::JumbfNotFound) => return Ok(None),
        Err(e) => return Err(format!("its C2PA manifest cannot be read: {e}")),
    };
    let state = match reader.validation_state() {
        c2pa::ValidationState::Trusted => "trusted",
        c2pa::ValidationState::Valid => "valid",
        c2pa::ValidationState::Invalid => "invalid",
    };
    let failures = reader
        .validation_results()
        .and_then(|r| r.active_manifest())
        .map(|m| {
            m.failure()
                .iter()
                .map(|s| match s.explanation() {
                    Some(why) => format!("{}: {why}", s.code()),
                    None => s.code().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let Some(m) = reader.active_manifest() else {
        return Ok(Some(Credentials {
            state: "invalid".into(),
            failures: vec!["no active manifest".into()],
            title: None,
            claim_generator: Vec::new(),
            actions: Vec::new(),
            ingredients: Vec::new(),
            signer: None,
            manifests: reader.manifests().len(),
        }));
    };
    let mut claim_generator: Vec<String> = m
        .claim_generator_info
        .iter()
        .flatten()
        .map(|g| match &g.version {
            Some(v) => format!("{} {v}", g.name),
            None => g.name.clone(),
        })
        .collect();
    if let Some(g) = m.claim_generator() {
        claim_generator.insert(0, g.to_string());
    }
    let actions = m
        .find_assertion::<c2pa::assertions::Actions>(c2pa::assertions::Actions::LABEL)
        .map(|a| {
            a.actions()
                .iter()
                .map(|x| Action {
                    action: x.action().to_string(),
                    digital_source_type: x.source_type().and_then(as_text),
                    software_agent: x.software_agent().and_then(as_text),
                })
                .collect()
        })
        .unwrap_or_default();
    let ingredients = m
        .ingredients()
        .iter()
        .map(|i| Ingredient {
            title: i.title().map(str::to_string),
            relationship: as_text(i.relationship()).unwrap_or_default(),
            has_credentials: i.active_manifest().is_some(),
        })
        .collect();
    let signer = m.signature_info().map(|s| Signer {
        issuer: s.issuer.clone(),
        common_name: s.common_name.clone(),
        alg: s.alg.map(|a| a.to_string()),
        time: s.time.clone(),
    });
    Ok(Some(Credentials {
        state: state.into(),
        failures,
        title: m.title().map(str::to_string),
        claim_generator,
        actions,
        ingredients,
        signer,
        manifests: reader.manifests().len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_credentials_and_damaged_stores_are_told_apart() {
        let png = crate::run::media::encode_png(&image::RgbImage::new(8, 8)).unwrap();
        assert_eq!(read(&png, None).unwrap(), None);
        assert_eq!(read(b"plain text", None).unwrap(), None);
        // A caBX chunk (where C2PA keeps a PNG's manifest) holding junk.
        let mut damaged = png[..33].to_vec();
        let junk = b"\0\0\0\x10jumbnot a manifest";
        damaged.extend_from_slice(&(junk.len() as u32).to_be_bytes());
        let mut chunk = b"caBX".to_vec();
        chunk.extend_from_slice(junk);
        damaged.extend_from_slice(&chunk);
        damaged.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        damaged.extend_from_slice(&png[33..]);
        match read(&damaged, None) {
            Err(e) => assert!(e.contains("C2PA"), "{e}"),
            Ok(Some(c)) => assert_eq!(c.state, "invalid", "{c:?}"),
            Ok(None) => panic!("a caBX chunk went unnoticed"),
        }
    }
}
