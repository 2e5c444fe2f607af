//! Marks that travel with every generated image and say it was made by a
//! trained model (issue 36; the EU AI Act's Art. 50 asks for them): a
//! signed C2PA manifest and an invisible watermark, both made offline with
//! the organisation's own key, and only when configured. (IPTC's digital
//! source type in XMP is part of every image's recipe, [`crate::recipe`].)
//!
//! The configuration is one TOML file, named by `DIFFLOG_PROVENANCE` or
//! given to `Init::provenance` (`difflog generate
//! --provenance`):
//!
//! ```toml
//! [sign]                                  # a C2PA manifest in every image
//! certificate_chain = "chain.pem"         # the signer's certificate first
//! private_key = "key.pem"                 # PKCS#8 PEM, mode 0600
//! algorithm = "es256"                     # es256 (default), es384, es512, ps256, ed25519
//!
//! [watermark]                             # invisible-watermark's dwtDct
//! text = "acme-gen-2"                     # or bits = "1011…"; default: diffusers' SDXL mark
//! ```
//!
//! Paths are relative to the file. Both are applied on the writer's encoder
//! threads, never the caller's; the image the program gets back is never
//! changed (the recorder is invisible), only the file the run stores. Each
//! marked image's `media` record says which marks it carries.

#[cfg(feature = "provenance")]
pub mod check;
#[cfg(feature = "provenance")]
mod es256;
#[cfg(feature = "provenance")]
pub mod sign;
pub mod watermark;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest provenance configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;
/// The largest certificate chain or key file read.
pub const MAX_PEM_BYTES: u64 = 256 << 10;

/// The marks a run puts on its generated images.
pub struct Provenance {
    /// The C2PA signer, when `[sign]` is configured.
    #[cfg(feature = "provenance")]
    pub signing: Option<sign::Signing>,
    /// The watermark's bits, when `[watermark]` is configured.
    pub watermark: Option<watermark::Message>,
    /// The configuration file they came from.
    pub source: PathBuf,
}

impl std::fmt::Debug for Provenance {
    // The key stays out of every printout.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Provenance");
        #[cfg(feature = "provenance")]
        d.field("signing", &self.signing.as_ref().map(|s| s.signer_name()));
        d.field("watermark", &self.watermark)
            .field("source", &self.source)
            .finish()
    }
}

impl Provenance {
    /// Reads `DIFFLOG_PROVENANCE` (unset or empty: no marks).
    pub fn from_env() -> Result<Option<Arc<Provenance>>> {
        match std::env::var_os("DIFFLOG_PROVENANCE").filter(|v| !v.is_empty()) {
            Some(p) => Ok(Some(Arc::new(Provenance::load(Path::new(&p))?))),
            None => Ok(None),
        }
    }

    /// Reads a provenance configuration: its key and chain are loaded and a
    /// test image signed and validated, so a key that does not match its
    /// certificate is an error now, not at the first image.
    pub fn load(path: &Path) -> Result<Provenance> {
        let bad = |why: String| Error::file(path, why);
        let text = crate::redact::read_config_file(
            path,
            "provenance configuration",
            MAX_CONFIG_BYTES,
            false,
        )?;
        let table = crate::error::toml_table(&text).map_err(bad)?;
        for key in table.keys() {
            if key != "sign" && key != "watermark" {
                return Err(bad(format!(
                    "unknown section [{key}]: a provenance configuration has [sign] and [watermark]"
                )));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let section = |name: &str| -> Result<Option<&toml::Table>> {
            match table.get(name) {
                None => Ok(None),
                Some(toml::Value::Table(t)) => Ok(Some(t)),
                Some(_) => Err(bad(format!("[{name}] must be a table"))),
            }
        };
        #[cfg(feature = "provenance")]
        let signing = match section("sign")? {
            Some(t) => Some(sign::Signing::from_table(t, dir, &bad)?),
            None => None,
        };
        #[cfg(not(feature = "provenance"))]
        let signing = match section("sign")? {
            Some(_) => {
                let _ = dir;
                return Err(bad(
                    "[sign]: this build of difflog (without its `provenance` feature) cannot \
                     sign C2PA manifests: configure only [watermark] here, or record with a \
                     build that has it (the command-line tools and the Python package do)"
                        .into(),
                ));
            }
            None => None::<()>,
        };
        let watermark = match section("watermark")? {
            Some(t) => Some(watermark::Message::from_table(t).map_err(bad)?),
            None => None,
        };
        if signing.is_none() && watermark.is_none() {
            return Err(bad(
                "nothing to do: configure [sign], [watermark] or both (or unset DIFFLOG_PROVENANCE)"
                    .into(),
            ));
        }
        Ok(Provenance {
            #[cfg(feature = "provenance")]
            signing,
            watermark,
            source: path.to_path_buf(),
        })
    }
}

/// A path from the configuration, relative to its folder.
#[cfg(feature = "provenance")]
fn config_path(dir: &Path, t: &toml::Table, key: &str) -> std::result::Result<PathBuf, String> {
    match t.get(key) {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(dir.join(s)),
        Some(_) => Err(format!("{key} must be a file name")),
        None => Err(format!("[sign] needs {key}")),
    }
}
