//! The demo model, `tiny-shapes`: a tiny Stable Diffusion model trained
//! (scripts/train-tiny-shapes, torch on the CPU) to draw what its prompt
//! says — a red, green, blue, yellow, white or black circle or square on
//! the left, right, top, bottom or middle of a background of another of
//! those colours — so that `difflog generate` shows pictures, not noise.
//!
//! Its files (models/tiny-shapes/, a diffusers folder as diffusers'
//! `save_pretrained` wrote it) are built into the binary and written into
//! the model cache on first use, under a name that carries their digest;
//! difflog then loads the folder like any other, from its own configs.

use crate::error::{Error, IoContext, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

macro_rules! shipped {
    ($($rel:literal),* $(,)?) => {
        [$(($rel, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-shapes/", $rel)) as &[u8])),*]
    };
}

/// The model's files: path in the folder, bytes.
const FILES: [(&str, &[u8]); 11] = shipped!(
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "training.json",
);

/// The preset's name.
pub const NAME: &str = "tiny-shapes";

/// The digest of the built-in files (names, sizes, bytes), hashed once a
/// process: it names the folder in the cache.
fn digest() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        let mut h = Sha256::new();
        for (rel, bytes) in FILES {
            h.update(rel.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        crate::format::hex(&h.finalize())
    })
}

/// The folder of the demo model in the cache, written first if missing.
pub fn ensure() -> Result<PathBuf> {
    let root = crate::paths::cache_root();
    let dir = root.join(format!("{NAME}-{}", &digest()[..12]));
    if dir.join("model_index.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).ctx(&root, "create model cache")?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{NAME}-"))
        .tempdir_in(&root)
        .ctx(&root, "create temporary model folder")?;
    // model_index.json last: a folder that has it is complete.
    for (rel, bytes) in FILES.iter().rev() {
        let path = tmp.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).ctx(parent, "create model folder")?;
        }
        std::fs::write(&path, bytes).ctx(&path, "write model file")?;
    }
    let tmp_path = tmp.keep();
    match std::fs::rename(&tmp_path, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.join("model_index.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp_path);
            Ok(dir)
        }
        Err(e) => Err(Error::io(&dir, "move the demo model into place", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_is_small_and_a_diffusers_folder() {
        let total: usize = FILES.iter().map(|(_, b)| b.len()).sum();
        assert!(total <= 10 << 20, "tiny-shapes is {total} bytes");
        let index: serde_json::Value = serde_json::from_slice(FILES[0].1).unwrap();
        assert_eq!(index["_class_name"], "StableDiffusionPipeline");
    }
}
