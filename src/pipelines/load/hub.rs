//! A model's files from the Hugging Face hub cache (`HF_HOME`,
//! `HF_HUB_OFFLINE=1`), downloading what is missing when the hub can be
//! reached, with CLIP tokenizers from their own repos, the snapshot's
//! revision and the blobs' digests as the cache names them.
//!
//! Air-gapped boxes have no hub: when files are missing the error lists every
//! one of them and says how to fill the cache on a connected machine.

use crate::error::{Error, Result};
use crate::pipelines::arch::Arch;
use crate::pipelines::load::files::{find, needed_files};
use crate::pipelines::sd::model::Family;
use std::path::{Path, PathBuf};

/// Where CLIP-L / CLIP-ViT-B tokenizers come from: the pipelines' repos ship
/// vocab.json/merges.txt, not tokenizer.json.
const CLIP_TOKENIZER: (&str, &str) = ("openai/clip-vit-base-patch32", "tokenizer.json");
/// Where the CLIP-G (bigG) tokenizer comes from.
const BIGG_TOKENIZER: (&str, &str) = ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "tokenizer.json");

/// A model's files found in the hub cache, ready to be assembled.
pub(crate) struct HubFiles {
    /// Per component key: each file and the name to record (`repo/path`).
    pub(crate) found: Vec<(String, Vec<(PathBuf, String)>)>,
    /// Per file: component key, recorded name, and digest (the blob's name).
    pub(crate) digests: Vec<(String, String, String)>,
    /// The snapshot (commit) the UNet or transformer came from.
    pub(crate) revision: Option<String>,
}

/// Finds every file a model of `arch` from hub repo `repo` needs in the
/// cache (downloading what is missing unless `HF_HUB_OFFLINE=1`); an error
/// lists every missing file and how to fill the cache.
pub(crate) fn from_hub_repo(repo: &str, arch: &Arch) -> Result<HubFiles> {
    let cache = hf_hub::Cache::from_env();
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v == "true")
        .unwrap_or(false);
    let fetch = |r: &str, f: &str| match cache.model(r.to_string()).get(f) {
        Some(p) => Some(p),
        None if offline => None,
        None => download(r, f),
    };
    let wants = needed_files(arch);
    // The pipelines' repos ship vocab.json/merges.txt for CLIP; its
    // tokenizer.json comes from the CLIP repos, as in candle's examples.
    let fallback = |rel: &str| -> Option<(&'static str, &'static str)> {
        let k = wants.iter().find(|w| w.rel == rel)?.key.as_str();
        let clip = match arch {
            Arch::Unet(_) => k.starts_with("tokenizer"),
            Arch::Flux(_) => k == "tokenizer_0",
            Arch::Sd3(_) => k == "tokenizer_0" || k == "tokenizer_1",
        };
        if !clip {
            return None;
        }
        let big = match arch {
            Arch::Unet(c) => c.family == Family::XlRefiner || k == "tokenizer_1",
            Arch::Flux(_) => false,
            Arch::Sd3(_) => k == "tokenizer_1",
        };
        Some(if big { BIGG_TOKENIZER } else { CLIP_TOKENIZER })
    };
    let used_fallback = std::cell::RefCell::new(Vec::new());
    let get = |rel: &str| -> Option<PathBuf> {
        if let Some(p) = fetch(repo, rel) {
            return Some(p);
        }
        let (r, f) = fallback(rel)?;
        let p = fetch(r, f)?;
        used_fallback
            .borrow_mut()
            .push((rel.to_string(), format!("{r}/{f}")));
        Some(p)
    };
    let (mut found, missing) = find(&wants, &get)?;
    if !missing.is_empty() {
        // What to download, from which repo: a sharded weight as its
        // folder's files (`--include`), a tokenizer from its CLIP repo.
        let lost: Vec<(String, String)> = missing
            .iter()
            .map(|m| match (m.sharded, fallback(&m.rel)) {
                (true, _) => (repo.to_string(), format!("{}*", m.rel)),
                (false, Some((r, f))) => (r.to_string(), f.to_string()),
                (false, None) => (repo.to_string(), m.rel.clone()),
            })
            .collect();
        let list: Vec<String> = missing
            .iter()
            .zip(&lost)
            .map(|(m, (r, f))| match m.sharded {
                true => format!("  {r}: {}", m.describe()),
                false => format!("  {r}: {f}"),
            })
            .collect();
        return Err(Error::weights(
            repo,
            format!(
                "{} file(s) missing from the Hugging Face cache {}{}:\n{}\n{}",
                lost.len(),
                cache.path().display(),
                if offline {
                    " (HF_HUB_OFFLINE=1)"
                } else {
                    " and the hub is unreachable"
                },
                list.join("\n"),
                fill_cache_help(&lost)
            ),
        ));
    }
    // Record the repo a file came from.
    let used = used_fallback.into_inner();
    for (_, files) in &mut found {
        for (_, rel) in files.iter_mut() {
            *rel = match used.iter().find(|(r, _)| r == rel) {
                Some((_, from)) => from.clone(),
                None => format!("{repo}/{rel}"),
            };
        }
    }
    let revision = found
        .iter()
        .find(|(k, _)| k == "unet" || k == "transformer")
        .and_then(|(_, f)| f.first())
        .and_then(|(p, _)| snapshot_revision(p));
    // A hub file's blob is named after its SHA-256 (LFS) or git hash: record it
    // rather than re-hashing gigabytes on every start.
    let mut digests = Vec::new();
    for (k, files) in &found {
        for (p, rel) in files {
            let blob = std::fs::read_link(p)
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            digests.push((k.clone(), rel.clone(), blob));
        }
    }
    Ok(HubFiles {
        found,
        digests,
        revision,
    })
}

/// Downloads one file of a repo into the cache; `None` when the hub cannot
/// be reached or has no such file.
fn download(repo: &str, file: &str) -> Option<PathBuf> {
    let api = hf_hub::api::sync::ApiBuilder::from_env().build().ok()?;
    api.model(repo.to_string()).get(file).ok()
}

/// The commit of a file in the cache: the folder under `snapshots/` it is in.
pub(crate) fn snapshot_revision(p: &Path) -> Option<String> {
    let mut cur = p.parent();
    while let Some(d) = cur {
        if d.parent()
            .and_then(|pp| pp.file_name())
            .map(|n| n == "snapshots")
            .unwrap_or(false)
        {
            return d.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        cur = d.parent();
    }
    None
}

/// How to fill the cache with the missing `(repo, file)`s on a machine with
/// network (one `huggingface-cli download` per repo; a `*` pattern as
/// `--include`) and bring it here.
pub(crate) fn fill_cache_help(missing: &[(String, String)]) -> String {
    let mut by_repo: Vec<(String, Vec<String>)> = Vec::new();
    for (r, f) in missing {
        match by_repo.iter_mut().find(|(rr, _)| rr == r) {
            Some((_, fs)) => fs.push(f.clone()),
            None => by_repo.push((r.clone(), vec![f.clone()])),
        }
    }
    let cmds: Vec<String> = by_repo
        .iter()
        .map(|(r, fs)| {
            let args: Vec<String> = fs
                .iter()
                .map(|f| match f.contains('*') {
                    true => format!("--include '{f}'"),
                    false => f.clone(),
                })
                .collect();
            format!("  huggingface-cli download {r} {}", args.join(" "))
        })
        .collect();
    format!(
        "on a machine with network, fill the cache:\n{}\nthen copy its hub folder (HF_HOME, default ~/.cache/huggingface) to this machine, \
         set HF_HOME to where it is and HF_HUB_OFFLINE=1; or pass --model DIR with a folder in the diffusers layout",
        cmds.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(r: &str, f: &str) -> (String, String) {
        (r.to_string(), f.to_string())
    }

    #[test]
    fn fill_cache_help_gives_one_command_per_repo_naming_every_file() {
        let help = fill_cache_help(&[
            pair("org/model", "unet/diffusion_pytorch_model.safetensors"),
            pair("openai/clip-vit-base-patch32", "tokenizer.json"),
            pair("org/model", "transformer/diffusion_pytorch_model*"),
            pair("org/model", "vae/diffusion_pytorch_model.safetensors"),
        ]);
        let lines: Vec<&str> = help.lines().collect();
        assert_eq!(lines[0], "on a machine with network, fill the cache:");
        assert_eq!(
            lines[1],
            "  huggingface-cli download org/model unet/diffusion_pytorch_model.safetensors \
             --include 'transformer/diffusion_pytorch_model*' vae/diffusion_pytorch_model.safetensors"
        );
        assert_eq!(
            lines[2],
            "  huggingface-cli download openai/clip-vit-base-patch32 tokenizer.json"
        );
        assert_eq!(lines.len(), 4, "{help}");
        assert!(
            lines[3].starts_with("then copy its hub folder (HF_HOME"),
            "{help}"
        );
        assert!(lines[3].contains("HF_HUB_OFFLINE=1"), "{help}");
        assert!(lines[3].ends_with("--model DIR with a folder in the diffusers layout"));
    }

    #[test]
    fn fill_cache_help_for_one_file() {
        let help = fill_cache_help(&[pair("a/b", "model_index.json")]);
        assert!(
            help.starts_with(
                "on a machine with network, fill the cache:\n  huggingface-cli download a/b model_index.json\nthen "
            ),
            "{help}"
        );
    }

    #[test]
    fn snapshot_revision_is_the_folder_under_snapshots() {
        let cache = Path::new("/home/u/.cache/huggingface/hub/models--org--name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let p = cache
            .join("snapshots")
            .join(commit)
            .join("unet/diffusion_pytorch_model.safetensors");
        assert_eq!(snapshot_revision(&p).as_deref(), Some(commit));
        let p = cache
            .join("snapshots")
            .join(commit)
            .join("model_index.json");
        assert_eq!(snapshot_revision(&p).as_deref(), Some(commit));
        // The nearest `snapshots/` above the file counts.
        let p = Path::new("/snapshots/a/snapshots/b/x/y.json");
        assert_eq!(snapshot_revision(p).as_deref(), Some("b"));
        let p = Path::new("snapshots/c/y.json");
        assert_eq!(snapshot_revision(p).as_deref(), Some("c"));
    }

    #[test]
    fn snapshot_revision_is_none_outside_a_snapshot() {
        for p in [
            "/models/sd15/unet/diffusion_pytorch_model.safetensors",
            "/cache/models--org--name/blobs/5f3a",
            "/cache/models--org--name/snapshots",
            "/cache/models--org--name/snapshots/file.json",
            "/cache/models--org--name/snapshot/abc/file.json",
            "file.json",
            "/",
            "",
        ] {
            assert_eq!(snapshot_revision(Path::new(p)), None, "{p:?}");
        }
    }
}
