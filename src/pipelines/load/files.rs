//! Which files a model of each architecture needs, finding them (single
//! files, or sharded weights through their `*.safetensors.index.json`)
//! wherever they come from — a folder or the hub cache — and hashing them.
//! Shared by the folder and hub loaders so both want exactly the same files
//! and report every missing one at once.

use crate::error::{Error, Result};
use crate::pipelines::arch::Arch;
use crate::pipelines::load::detect::read_small;
use crate::pipelines::sd::model::ModelConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One file (or sharded set) a model needs.
pub(crate) struct Want {
    /// Component key (`unet`, `text_encoder_0`, `tokenizer_1`, …).
    pub(crate) key: String,
    /// Path in the folder; for a sharded weight, the stem (`transformer/diffusion_pytorch_model`).
    pub(crate) rel: String,
    /// Weights that may be split into shards listed by `<stem>.safetensors.index.json`.
    pub(crate) sharded: bool,
}

/// A [`Want`] from its parts.
pub(crate) fn want(key: impl Into<String>, rel: impl Into<String>, sharded: bool) -> Want {
    Want {
        key: key.into(),
        rel: rel.into(),
        sharded,
    }
}

/// Every file a model of `arch` needs, in load order: text encoders and
/// tokenizers, the UNet or transformer, the VAE.
pub(crate) fn needed_files(arch: &Arch) -> Vec<Want> {
    let mut v = Vec::new();
    match arch {
        Arch::Unet(cfg) => {
            for i in 0..cfg.text.len() {
                let (w, t) = cfg.text_files(i);
                v.push(want(format!("text_encoder_{i}"), w, false));
                v.push(want(format!("tokenizer_{i}"), t, false));
            }
            v.push(want("unet", ModelConfig::UNET_FILE, false));
        }
        Arch::Flux(_) => {
            v.push(want("text_encoder_0", "text_encoder/model", true));
            v.push(want("tokenizer_0", "tokenizer/tokenizer.json", false));
            v.push(want("text_encoder_1", "text_encoder_2/model", true));
            v.push(want("tokenizer_1", "tokenizer_2/tokenizer.json", false));
            v.push(want(
                "transformer",
                "transformer/diffusion_pytorch_model",
                true,
            ));
        }
        Arch::Sd3(_) => {
            for (i, n) in ["", "_2", "_3"].iter().enumerate() {
                v.push(want(
                    format!("text_encoder_{i}"),
                    format!("text_encoder{n}/model"),
                    true,
                ));
                v.push(want(
                    format!("tokenizer_{i}"),
                    format!("tokenizer{n}/tokenizer.json"),
                    false,
                ));
            }
            v.push(want(
                "transformer",
                "transformer/diffusion_pytorch_model",
                true,
            ));
        }
    }
    v.push(want("vae", ModelConfig::VAE_FILE, false));
    v
}

/// The shard file names an index lists (`weight_map` values), in order,
/// each a plain `.safetensors` name in the index's folder.
pub(crate) fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
    let text = read_small(index).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    let map = v["weight_map"].as_object().ok_or("no weight_map object")?;
    let mut names: Vec<String> = Vec::new();
    for f in map.values() {
        let f = f.as_str().ok_or("a weight_map value is not a string")?;
        let plain =
            !f.is_empty() && !f.contains(['/', '\\']) && f != ".." && f.ends_with(".safetensors");
        if !plain {
            return Err(format!(
                "shard {f:?} is not a .safetensors file name in this folder"
            ));
        }
        if !names.iter().any(|n| n == f) {
            names.push(f.to_string());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err("it lists no shard".into());
    }
    Ok(names)
}

/// A file (or a sharded weight: its stem) that could not be found.
pub(crate) struct Missing {
    /// Path in the folder; for a sharded weight, its stem.
    pub(crate) rel: String,
    /// A sharded weight of which neither the single file nor the index was found.
    pub(crate) sharded: bool,
}

impl Missing {
    /// What to tell the user is missing.
    pub(crate) fn describe(&self) -> String {
        if self.sharded {
            format!(
                "{0}.safetensors (or {0}.safetensors.index.json and the shards it lists)",
                self.rel
            )
        } else {
            self.rel.clone()
        }
    }
}

/// Finds every wanted file with `get` (relative path → local file, if
/// present): single files as they are, sharded weights as one file or the
/// shards their index lists. Returns the files per key (with the name to
/// record) and what is missing.
#[allow(clippy::type_complexity)]
pub(crate) fn find(
    wants: &[Want],
    get: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<(Vec<(String, Vec<(PathBuf, String)>)>, Vec<Missing>)> {
    let missing_file = |rel: &str| Missing {
        rel: rel.to_string(),
        sharded: false,
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for w in wants {
        if !w.sharded {
            match get(&w.rel) {
                Some(p) => found.push((w.key.clone(), vec![(p, w.rel.clone())])),
                None => missing.push(missing_file(&w.rel)),
            }
            continue;
        }
        let single = format!("{}.safetensors", w.rel);
        if let Some(p) = get(&single) {
            found.push((w.key.clone(), vec![(p, single)]));
            continue;
        }
        let index_rel = format!("{single}.index.json");
        let Some(index) = get(&index_rel) else {
            missing.push(Missing {
                rel: w.rel.clone(),
                sharded: true,
            });
            continue;
        };
        let names = shard_names(&index).map_err(|e| Error::weights(index.display(), e))?;
        let folder = w.rel.rsplit_once('/').map_or("", |(d, _)| d);
        let mut files = Vec::new();
        for n in names {
            let rel = format!("{folder}/{n}");
            match get(&rel) {
                Some(p) => files.push((p, rel)),
                None => missing.push(missing_file(&rel)),
            }
        }
        found.push((w.key.clone(), files));
    }
    Ok((found, missing))
}

/// SHA-256 of a file, read in pieces (weights can be many gigabytes).
pub(crate) fn file_sha256(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, "read model file", e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p, "read model file", e))?;
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::flow::flux_model::FluxConfig;
    use crate::pipelines::flow::sd3_model::Sd3Config;
    use serde_json::json;

    /// `(key, rel, sharded)` of each wanted file.
    fn listed(arch: &Arch) -> Vec<(String, String, bool)> {
        needed_files(arch)
            .into_iter()
            .map(|w| (w.key, w.rel, w.sharded))
            .collect()
    }

    fn row(key: &str, rel: &str, sharded: bool) -> (String, String, bool) {
        (key.to_string(), rel.to_string(), sharded)
    }

    /// Writes `text` to `dir/rel`, making its folders.
    fn put(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn index_with(dir: &Path, weight_map: Value) -> PathBuf {
        let v = json!({"metadata": {"total_size": 1234}, "weight_map": weight_map});
        put(dir, "m.safetensors.index.json", &format!("{v:#}\n"));
        dir.join("m.safetensors.index.json")
    }

    /// `get` for a folder: its files that exist.
    fn in_folder(dir: &Path) -> impl Fn(&str) -> Option<PathBuf> + '_ {
        move |rel: &str| Some(dir.join(rel)).filter(|p| p.is_file())
    }

    #[test]
    fn shard_names_lists_each_shard_once_sorted() {
        let tmp = tempfile::tempdir().unwrap();
        let index = index_with(
            tmp.path(),
            json!({
                "a.weight": "model-00002-of-00002.safetensors",
                "b.weight": "model-00001-of-00002.safetensors",
                "c.weight": "model-00002-of-00002.safetensors",
            }),
        );
        assert_eq!(
            shard_names(&index).unwrap(),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
    }

    #[test]
    fn shard_names_refuses_bad_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = |weight_map: Value| shard_names(&index_with(tmp.path(), weight_map)).unwrap_err();
        for escaping in [
            "../model.safetensors",
            "sub/model.safetensors",
            "/abs/model.safetensors",
            "sub\\model.safetensors",
            "..",
            "",
            "model.bin",
        ] {
            assert_eq!(
                bad(json!({"a": "ok.safetensors", "b": escaping})),
                format!("shard {escaping:?} is not a .safetensors file name in this folder")
            );
        }
        assert_eq!(bad(json!({"a": 3})), "a weight_map value is not a string");
        assert_eq!(bad(json!({})), "it lists no shard");
        assert_eq!(bad(json!(["a.safetensors"])), "no weight_map object");
        let p = tmp.path().join("garbage.json");
        std::fs::write(&p, "not json").unwrap();
        assert!(shard_names(&p).unwrap_err().starts_with("invalid JSON: "));
        assert!(shard_names(&tmp.path().join("absent.json")).is_err());
    }

    #[test]
    fn an_sd15_unet_wants_one_encoder_tokenizer_unet_and_vae() {
        assert_eq!(
            listed(&Arch::Unet(ModelConfig::sd15())),
            [
                row("text_encoder_0", "text_encoder/model.safetensors", false),
                row("tokenizer_0", "tokenizer/tokenizer.json", false),
                row("unet", "unet/diffusion_pytorch_model.safetensors", false),
                row("vae", "vae/diffusion_pytorch_model.safetensors", false),
            ]
        );
    }

    #[test]
    fn xl_wants_two_encoders_and_the_refiner_only_the_second() {
        assert_eq!(
            listed(&Arch::Unet(ModelConfig::sdxl())),
            [
                row("text_encoder_0", "text_encoder/model.safetensors", false),
                row("tokenizer_0", "tokenizer/tokenizer.json", false),
                row("text_encoder_1", "text_encoder_2/model.safetensors", false),
                row("tokenizer_1", "tokenizer_2/tokenizer.json", false),
                row("unet", "unet/diffusion_pytorch_model.safetensors", false),
                row("vae", "vae/diffusion_pytorch_model.safetensors", false),
            ]
        );
        assert_eq!(
            listed(&Arch::Unet(ModelConfig::sdxl_refiner())),
            [
                row("text_encoder_0", "text_encoder_2/model.safetensors", false),
                row("tokenizer_0", "tokenizer_2/tokenizer.json", false),
                row("unet", "unet/diffusion_pytorch_model.safetensors", false),
                row("vae", "vae/diffusion_pytorch_model.safetensors", false),
            ]
        );
    }

    #[test]
    fn flux_wants_clip_t5_and_a_sharded_transformer() {
        assert_eq!(
            listed(&Arch::Flux(Box::new(FluxConfig::schnell()))),
            [
                row("text_encoder_0", "text_encoder/model", true),
                row("tokenizer_0", "tokenizer/tokenizer.json", false),
                row("text_encoder_1", "text_encoder_2/model", true),
                row("tokenizer_1", "tokenizer_2/tokenizer.json", false),
                row("transformer", "transformer/diffusion_pytorch_model", true),
                row("vae", "vae/diffusion_pytorch_model.safetensors", false),
            ]
        );
    }

    #[test]
    fn sd3_wants_three_encoders_and_a_sharded_transformer() {
        assert_eq!(
            listed(&Arch::Sd3(Box::new(Sd3Config::sd35_large()))),
            [
                row("text_encoder_0", "text_encoder/model", true),
                row("tokenizer_0", "tokenizer/tokenizer.json", false),
                row("text_encoder_1", "text_encoder_2/model", true),
                row("tokenizer_1", "tokenizer_2/tokenizer.json", false),
                row("text_encoder_2", "text_encoder_3/model", true),
                row("tokenizer_2", "tokenizer_3/tokenizer.json", false),
                row("transformer", "transformer/diffusion_pytorch_model", true),
                row("vae", "vae/diffusion_pytorch_model.safetensors", false),
            ]
        );
    }

    #[test]
    fn find_takes_single_files_and_shards_and_records_their_names() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        put(d, "vae/v.safetensors", "v");
        put(d, "te/model.safetensors", "t");
        put(d, "tr/m-1.safetensors", "1");
        put(d, "tr/m-2.safetensors", "2");
        let v = json!({"weight_map": {"x": "m-2.safetensors", "y": "m-1.safetensors"}});
        put(d, "tr/m.safetensors.index.json", &v.to_string());
        let wants = [
            want("vae", "vae/v.safetensors", false),
            want("text", "te/model", true),
            want("transformer", "tr/m", true),
        ];
        let (found, missing) = find(&wants, &in_folder(d)).unwrap();
        assert!(missing.is_empty());
        let names: Vec<(&str, Vec<&str>)> = found
            .iter()
            .map(|(k, f)| (k.as_str(), f.iter().map(|(_, r)| r.as_str()).collect()))
            .collect();
        assert_eq!(
            names,
            [
                ("vae", vec!["vae/v.safetensors"]),
                ("text", vec!["te/model.safetensors"]),
                (
                    "transformer",
                    vec!["tr/m-1.safetensors", "tr/m-2.safetensors"]
                ),
            ]
        );
        assert_eq!(found[2].1[1].0, d.join("tr/m-2.safetensors"));
    }

    #[test]
    fn find_reports_every_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        put(d, "tokenizer/tokenizer.json", "{}");
        // The transformer's index is there, one of its two shards is not.
        put(
            d,
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "1",
        );
        let v = json!({"weight_map": {
            "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "b": "diffusion_pytorch_model-00002-of-00002.safetensors",
        }});
        put(
            d,
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            &v.to_string(),
        );
        let wants = needed_files(&Arch::Flux(Box::new(FluxConfig::dev())));
        let (found, missing) = find(&wants, &in_folder(d)).unwrap();
        let described: Vec<String> = missing.iter().map(Missing::describe).collect();
        assert_eq!(
            described,
            [
                "text_encoder/model.safetensors (or text_encoder/model.safetensors.index.json and the shards it lists)",
                "text_encoder_2/model.safetensors (or text_encoder_2/model.safetensors.index.json and the shards it lists)",
                "tokenizer_2/tokenizer.json",
                "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
        assert_eq!(
            missing.iter().map(|m| m.sharded).collect::<Vec<_>>(),
            [true, true, false, false, false]
        );
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["tokenizer_0", "transformer"]);
        assert_eq!(found[1].1.len(), 1);
    }

    #[test]
    fn find_names_a_bad_shard_index() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        put(
            d,
            "tr/m.safetensors.index.json",
            r#"{"weight_map": {"a": "../x.safetensors"}}"#,
        );
        let err = match find(&[want("transformer", "tr/m", true)], &in_folder(d)) {
            Ok(_) => panic!("a shard outside the folder was accepted"),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err,
            format!(
                "{}: shard \"../x.safetensors\" is not a .safetensors file name in this folder",
                d.join("tr/m.safetensors.index.json").display()
            )
        );
    }

    #[test]
    fn file_sha256_hashes_the_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            file_sha256(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(file_sha256(&tmp.path().join("absent")).is_err());
    }
}
