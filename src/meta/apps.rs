//! The tools that write one JSON object: InvokeAI's `invokeai_metadata`,
//! Fooocus's `parameters` in its own scheme, SwarmUI's `parameters` with
//! `sui_image_params`, NovelAI's `Comment` (with `Description` and
//! `Source`), and difflog's own `difflog` recipe — each read by the names
//! its writer uses (see each tool's source for them).

use super::{a1111, as_f64, as_text, as_u64, Generation, Lora};
use serde_json::{Map, Value};

/// `m[key]` through a getter.
fn get<T>(m: &Map<String, Value>, key: &str, f: fn(&Value) -> Option<T>) -> Option<T> {
    m.get(key).and_then(f)
}

/// InvokeAI's core metadata (`CoreMetadataInvocation`: `positive_prompt`,
/// `seed`, `cfg_scale`, `model` as `{name, hash, …}`, `loras` as
/// `[{model, weight}]`, `app_version`).
pub(super) fn invokeai(m: &Map<String, Value>) -> Generation {
    let model = m.get("model").and_then(Value::as_object);
    let loras = m
        .get("loras")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(Value::as_object)
                .filter_map(|l| {
                    // `model` is the LoRA's identifier (older: `lora`).
                    let id = l
                        .get("model")
                        .or_else(|| l.get("lora"))
                        .and_then(Value::as_object)?;
                    Some(Lora {
                        name: get(id, "name", as_text)?,
                        weight: get(l, "weight", as_f64),
                        hash: get(id, "hash", as_text),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Generation {
        tool: "InvokeAI".into(),
        tool_version: get(m, "app_version", as_text),
        prompt: get(m, "positive_prompt", as_text),
        negative_prompt: get(m, "negative_prompt", as_text).filter(|n| !n.is_empty()),
        seed: get(m, "seed", as_u64),
        steps: get(m, "steps", as_u64),
        scheduler: get(m, "scheduler", as_text),
        cfg: get(m, "cfg_scale", as_f64),
        width: get(m, "width", as_u64),
        height: get(m, "height", as_u64),
        model: model.and_then(|o| get(o, "name", as_text)),
        model_hash: model.and_then(|o| get(o, "hash", as_text)),
        loras,
        denoise: get(m, "strength", as_f64),
        ..Generation::default()
    }
}

/// Fooocus's own scheme: `prompt`, `negative_prompt`, `steps`, `sampler`,
/// `scheduler`, `seed` (a string), `guidance_scale`, `resolution` (the
/// text `"(W, H)"`), `base_model`, `base_model_hash`, `loras` as
/// `[[name, weight, hash]]`, `version` (`"Fooocus v2.5.5"`).
pub(super) fn fooocus(m: &Map<String, Value>) -> Generation {
    let size = get(m, "resolution", as_text).and_then(|r| {
        let r = r.trim().trim_start_matches('(').trim_end_matches(')');
        let (w, h) = r.split_once(',')?;
        Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
    });
    let loras = m
        .get("loras")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(Value::as_array)
                .filter_map(|l| {
                    Some(Lora {
                        name: l.first().and_then(as_text)?,
                        weight: l.get(1).and_then(as_f64),
                        hash: l.get(2).and_then(as_text),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Generation {
        tool: "Fooocus".into(),
        tool_version: get(m, "version", as_text).map(|v| v.trim_start_matches("Fooocus ").into()),
        prompt: get(m, "prompt", as_text),
        negative_prompt: get(m, "negative_prompt", as_text).filter(|n| !n.is_empty()),
        seed: get(m, "seed", as_u64),
        steps: get(m, "steps", as_u64),
        sampler: get(m, "sampler", as_text),
        scheduler: get(m, "scheduler", as_text),
        cfg: get(m, "guidance_scale", as_f64),
        width: size.map(|s: (u64, u64)| s.0),
        height: size.map(|s| s.1),
        model: get(m, "base_model", as_text),
        model_hash: get(m, "base_model_hash", as_text),
        loras,
        ..Generation::default()
    }
}

/// SwarmUI's `sui_image_params` (parameter ids: `prompt`,
/// `negativeprompt`, `model`, `seed`, `steps`, `cfgscale`, `width`,
/// `height`, `sampler`, `scheduler`, `loras` and `loraweights`,
/// `swarm_version`), and `sui_models` for the model's hash.
pub(super) fn swarmui(p: &Map<String, Value>, models: Option<&Value>) -> Generation {
    let model = get(p, "model", as_text);
    let model_hash = models.and_then(Value::as_array).and_then(|ms| {
        ms.iter()
            .filter_map(Value::as_object)
            .find(|m| get(m, "param", as_text).as_deref() == Some("model"))
            .and_then(|m| get(m, "hash", as_text))
    });
    let names: Vec<String> = p
        .get("loras")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(as_text).collect())
        .unwrap_or_default();
    let weights: Vec<Option<f64>> = p
        .get("loraweights")
        .and_then(Value::as_array)
        .map(|w| w.iter().map(as_f64).collect())
        .unwrap_or_default();
    let loras = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Lora {
            name,
            weight: weights.get(i).copied().flatten(),
            hash: None,
        })
        .collect();
    Generation {
        tool: "SwarmUI".into(),
        tool_version: get(p, "swarm_version", as_text),
        prompt: get(p, "prompt", as_text),
        negative_prompt: get(p, "negativeprompt", as_text).filter(|n| !n.is_empty()),
        seed: get(p, "seed", as_u64),
        steps: get(p, "steps", as_u64),
        sampler: get(p, "sampler", as_text),
        scheduler: get(p, "scheduler", as_text),
        cfg: get(p, "cfgscale", as_f64),
        width: get(p, "width", as_u64),
        height: get(p, "height", as_u64),
        model,
        model_hash,
        loras,
        denoise: get(p, "initimagecreativity", as_f64),
        ..Generation::default()
    }
}

/// NovelAI: `Comment` (JSON: `steps`, `scale`, `seed`, `sampler`,
/// `noise_schedule`, `width`, `height`, `uc` the negative prompt,
/// `strength`), `Description` (the prompt) and `Source` (the model's name
/// and, last, its hash).
pub(super) fn novelai(
    c: &Map<String, Value>,
    description: Option<&str>,
    source: Option<&str>,
) -> Generation {
    let (model, model_hash) = match source.map(str::trim) {
        Some(s) => match s.rsplit_once(char::is_whitespace) {
            Some((name, hash))
                if !hash.is_empty()
                    && hash
                        .chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit()) =>
            {
                (Some(name.trim().to_string()), Some(hash.to_string()))
            }
            _ => (Some(s.to_string()), None),
        },
        None => (None, None),
    };
    Generation {
        tool: "NovelAI".into(),
        prompt: description
            .map(str::to_string)
            .or_else(|| get(c, "prompt", as_text)),
        negative_prompt: get(c, "uc", as_text).filter(|n| !n.is_empty()),
        seed: get(c, "seed", as_u64),
        steps: get(c, "steps", as_u64),
        sampler: get(c, "sampler", as_text),
        scheduler: get(c, "noise_schedule", as_text),
        cfg: get(c, "scale", as_f64),
        width: get(c, "width", as_u64),
        height: get(c, "height", as_u64),
        model,
        model_hash,
        denoise: get(c, "strength", as_f64),
        ..Generation::default()
    }
}

/// difflog's own recipe (see [`crate::recipe`]), with the sampler name and
/// model hash its `parameters` text gives.
pub(super) fn difflog(r: &Map<String, Value>, parameters: Option<&str>) -> Generation {
    let from_text = parameters.map(|p| a1111::read(p, Some("difflog")));
    let params = r.get("params").and_then(Value::as_object);
    let param = |k: &str, f: fn(&Value) -> Option<f64>| params.and_then(|p| get(p, k, f));
    Generation {
        tool: "difflog".into(),
        prompt: get(r, "prompt", as_text),
        negative_prompt: get(r, "negative_prompt", as_text),
        seed: get(r, "seed", as_u64),
        steps: params.and_then(|p| get(p, "num_inference_steps", as_u64)),
        sampler: from_text.as_ref().and_then(|g| g.sampler.clone()),
        scheduler: r
            .get("scheduler")
            .and_then(Value::as_object)
            .and_then(|s| get(s, "name", as_text)),
        cfg: param("guidance_scale", as_f64),
        width: get(r, "width", as_u64),
        height: get(r, "height", as_u64),
        model: get(r, "model_id", as_text),
        model_hash: from_text.as_ref().and_then(|g| g.model_hash.clone()),
        denoise: param("strength", as_f64),
        ..Generation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn novelais_source_splits_into_model_and_hash() {
        let c = json!({"steps": 28, "scale": 5.0, "seed": 7, "uc": "lowres"});
        let g = novelai(
            c.as_object().unwrap(),
            Some("a cat"),
            Some("Stable Diffusion XL C1E1DE52"),
        );
        assert_eq!(g.model.as_deref(), Some("Stable Diffusion XL"));
        assert_eq!(g.model_hash.as_deref(), Some("C1E1DE52"));
        assert_eq!((g.steps, g.seed, g.cfg), (Some(28), Some(7), Some(5.0)));
    }

    #[test]
    fn fooocus_resolution_and_string_seed_are_read() {
        let m = json!({"resolution": "(1152, 896)", "seed": "123", "loras": [["x.safetensors", 0.5, "ab12"]]});
        let g = fooocus(m.as_object().unwrap());
        assert_eq!(
            (g.width, g.height, g.seed),
            (Some(1152), Some(896), Some(123))
        );
        assert_eq!(g.loras[0].hash.as_deref(), Some("ab12"));
    }
}
