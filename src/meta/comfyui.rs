//! ComfyUI's `prompt` chunk: the API graph that made the image (node id →
//! `{"class_type", "inputs"}`, a link written `["node id", output slot]`).
//! The sampler is found from the node that saved the image back through
//! the decoder, and from it: its seed, steps, CFG, sampler and scheduler
//! (also through `SamplerCustom`'s and `SamplerCustomAdvanced`'s noise,
//! guider, sampler and sigmas nodes), the prompts through the conditioning
//! nodes to the text encoders, the model through LoRA loaders to the
//! checkpoint, the size from the latent. A value that comes from a node
//! this reader does not know is named in `unresolved`, not guessed.

use super::{as_f64, as_text, as_u64, Generation, Lora, MAX_HOPS};
use serde_json::{Map, Value};

/// Nodes that sample.
const SAMPLERS: [&str; 4] = [
    "KSampler",
    "KSamplerAdvanced",
    "SamplerCustom",
    "SamplerCustomAdvanced",
];

/// Inputs that carry an image or a latent back towards the sampler, in the
/// order they are tried.
const BACK: [&str; 6] = [
    "samples",
    "latent",
    "latent_image",
    "images",
    "image",
    "pixels",
];

/// A graph and what is read from it.
struct Graph<'a> {
    nodes: &'a Map<String, Value>,
    unresolved: Vec<String>,
}

/// The node a link points at, and the output slot.
fn link(v: &Value) -> Option<(String, u64)> {
    match v.as_array()?.as_slice() {
        [id, slot] => {
            let id = match id {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((id, slot.as_u64()?))
        }
        _ => None,
    }
}

impl<'a> Graph<'a> {
    /// A node's class and inputs.
    fn node(&self, id: &str) -> Option<(&'a str, &'a Map<String, Value>)> {
        let n = self.nodes.get(id)?.as_object()?;
        let class = n.get("class_type")?.as_str()?;
        let empty: &'static Map<String, Value> = empty_map();
        let inputs = n.get("inputs").and_then(Value::as_object).unwrap_or(empty);
        Some((class, inputs))
    }

    fn is_sampler(&self, id: &str) -> bool {
        self.node(id).is_some_and(|(class, inputs)| {
            SAMPLERS.contains(&class)
                || ["sampler_name", "steps", "cfg"]
                    .iter()
                    .all(|k| inputs.contains_key(*k))
        })
    }

    /// The sampler whose output was saved: from each saving node (in id
    /// order) back through decoders and latent nodes; else the only
    /// sampler there is.
    fn sampler(&mut self) -> Option<String> {
        let mut ids: Vec<&String> = self.nodes.keys().collect();
        ids.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
        for id in &ids {
            let Some((class, inputs)) = self.node(id) else {
                continue;
            };
            if !(class.starts_with("Save") || class == "PreviewImage") {
                continue;
            }
            let mut cur = inputs.get("images").and_then(link).map(|l| l.0);
            for _ in 0..MAX_HOPS {
                let Some(at) = cur else { break };
                if self.is_sampler(&at) {
                    return Some(at);
                }
                cur = self.node(&at).and_then(|(_, inputs)| {
                    BACK.iter()
                        .find_map(|k| inputs.get(*k).and_then(link))
                        .map(|l| l.0)
                });
            }
        }
        let samplers: Vec<&String> = ids.into_iter().filter(|id| self.is_sampler(id)).collect();
        match samplers.as_slice() {
            [] => {
                self.unresolved.push("no sampler node in the graph".into());
                None
            }
            [one] => Some(one.to_string()),
            [first, ..] => {
                self.unresolved.push(format!(
                    "{} sampler nodes and none found from a saving node: read node {first}, the first",
                    samplers.len()
                ));
                Some(first.to_string())
            }
        }
    }

    /// Input `key` of node `id` as a value: a literal, or a link to a node
    /// that holds one value (a primitive); else named in `unresolved`.
    fn value(&mut self, id: &str, key: &str) -> Option<&'a Value> {
        let (_, inputs) = self.node(id)?;
        let v = inputs.get(key)?;
        let Some((from, _)) = link(v) else {
            return Some(v);
        };
        let literal: Option<&'a Value> = self.node(&from).and_then(|(_, inputs)| {
            let mut literals = inputs.values().filter(|v| link(v).is_none());
            match (literals.next(), literals.next()) {
                (Some(v), None) => Some(v),
                _ => None,
            }
        });
        if literal.is_none() {
            let class = self.node(&from).map_or("missing", |n| n.0);
            self.unresolved.push(format!(
                "{key} comes from node {from} ({class}): not resolved"
            ));
        }
        literal
    }

    /// The node input `key` of node `id` links to.
    fn linked(&self, id: &str, key: &str) -> Option<(String, u64)> {
        self.node(id)?.1.get(key).and_then(link)
    }

    /// The texts of the text encoders a conditioning link leads to.
    fn texts(&mut self, start: Option<(String, u64)>) -> Vec<String> {
        let first = start.as_ref().map(|l| l.0.clone());
        let mut out = Vec::new();
        let mut todo: Vec<((String, u64), usize)> = start.into_iter().map(|l| (l, 0)).collect();
        // Each node (and slot) once: a graph that links back, or to one node
        // by many ways, is walked in time of its size.
        let mut seen = std::collections::HashSet::new();
        while let Some(((id, slot), hops)) = todo.pop() {
            if !seen.insert((id.clone(), slot)) {
                continue;
            }
            let Some((class, inputs)) = self.node(&id) else {
                continue;
            };
            if hops >= MAX_HOPS {
                self.unresolved
                    .push(format!("conditioning deeper than {MAX_HOPS} nodes"));
                continue;
            }
            // Text encoders: SD's `text`, SDXL's `text_g`, FLUX's `t5xxl`.
            if let Some(key) = ["text", "text_g", "t5xxl", "clip_l"]
                .into_iter()
                .find(|k| inputs.contains_key(*k))
            {
                if let Some(t) = self.value(&id, key).and_then(as_text) {
                    out.push(t);
                }
                continue;
            }
            // A node that passes positive and negative on (ControlNet):
            // slot 0 is the positive, 1 the negative.
            if inputs.contains_key("positive") && inputs.contains_key("negative") {
                let key = if slot == 0 { "positive" } else { "negative" };
                if let Some(l) = self.linked(&id, key) {
                    todo.push((l, hops + 1));
                }
                continue;
            }
            let next: Vec<(String, u64)> = [
                "conditioning",
                "conditioning_1",
                "conditioning_2",
                "conditioning_to",
                "conditioning_from",
            ]
            .iter()
            .filter_map(|k| self.linked(&id, k))
            .collect();
            if next.is_empty() {
                self.unresolved.push(format!(
                    "a prompt comes from node {id} ({class}): not resolved"
                ));
            }
            // Pushed in reverse so that the first input's text comes first.
            todo.extend(next.into_iter().rev().map(|l| (l, hops + 1)));
        }
        if let (true, Some(first)) = (out.is_empty(), first) {
            self.unresolved
                .push(format!("no text encoder reached from node {first}"));
        }
        out
    }

    /// The checkpoint and the LoRAs a model link leads to.
    fn model(&mut self, start: Option<(String, u64)>, g: &mut Generation) {
        let mut cur = start;
        let mut loras = Vec::new();
        for hop in 0..=MAX_HOPS {
            let Some((id, _)) = cur else { break };
            let Some((class, inputs)) = self.node(&id) else {
                break;
            };
            if hop == MAX_HOPS {
                self.unresolved
                    .push(format!("the model is more than {MAX_HOPS} nodes away"));
                break;
            }
            if let Some(name) = ["ckpt_name", "unet_name"]
                .iter()
                .find_map(|k| inputs.get(*k).and_then(as_text))
            {
                g.model = Some(name);
                break;
            }
            if let Some(name) = inputs.get("lora_name").and_then(as_text) {
                loras.push(Lora {
                    name,
                    weight: inputs.get("strength_model").and_then(as_f64),
                    hash: None,
                });
            }
            cur = self.linked(&id, "model");
            if cur.is_none() {
                self.unresolved.push(format!(
                    "the model comes from node {id} ({class}): not resolved"
                ));
            }
        }
        // Nearest the sampler first as walked: the checkpoint's first.
        loras.reverse();
        g.loras = loras;
    }

    /// Width and height from the latent a sampler starts from.
    fn size(&mut self, start: Option<(String, u64)>, g: &mut Generation) {
        let mut cur = start;
        for hop in 0..=MAX_HOPS {
            let Some((id, _)) = cur else { return };
            let Some((class, inputs)) = self.node(&id) else {
                return;
            };
            if hop == MAX_HOPS {
                self.unresolved
                    .push(format!("the size is more than {MAX_HOPS} nodes away"));
                return;
            }
            let w = inputs.get("width").and_then(as_u64);
            let h = inputs.get("height").and_then(as_u64);
            if let (Some(w), Some(h)) = (w, h) {
                (g.width, g.height) = (Some(w), Some(h));
                return;
            }
            cur = BACK.iter().find_map(|k| inputs.get(*k).and_then(link));
            if cur.is_none() {
                self.unresolved.push(format!(
                    "the size comes from node {id} ({class}): not resolved"
                ));
            }
        }
    }
}

/// An empty input map, for nodes without inputs.
fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// Reads a ComfyUI API graph.
pub(super) fn read(nodes: &Map<String, Value>) -> Generation {
    let mut graph = Graph {
        nodes,
        unresolved: Vec::new(),
    };
    let mut g = Generation {
        tool: "ComfyUI".into(),
        ..Generation::default()
    };
    if let Some(s) = graph.sampler() {
        read_sampler(&mut graph, &s, &mut g);
    }
    g.unresolved = graph.unresolved;
    g
}

/// Reads the sampler node `s` and what it links to.
fn read_sampler(graph: &mut Graph<'_>, s: &str, g: &mut Generation) {
    let class = graph.node(s).map_or("", |n| n.0);
    // SamplerCustomAdvanced: noise, guider, sampler and sigmas are nodes.
    let noise = graph.linked(s, "noise").map(|l| l.0);
    let guider = graph.linked(s, "guider").map(|l| l.0);
    let sampler = graph.linked(s, "sampler").map(|l| l.0);
    let sigmas = graph.linked(s, "sigmas").map(|l| l.0);
    let seed_at = noise.as_deref().unwrap_or(s);
    g.seed = ["seed", "noise_seed"]
        .iter()
        .find_map(|k| graph.value(seed_at, k))
        .and_then(as_u64);
    let guide_at = guider.as_deref().unwrap_or(s);
    g.cfg = graph.value(guide_at, "cfg").and_then(as_f64);
    g.sampler = graph
        .value(sampler.as_deref().unwrap_or(s), "sampler_name")
        .and_then(as_text);
    let sched_at = sigmas.as_deref().unwrap_or(s);
    g.scheduler = graph.value(sched_at, "scheduler").and_then(as_text);
    g.steps = graph.value(sched_at, "steps").and_then(as_u64);
    g.denoise = graph.value(sched_at, "denoise").and_then(as_f64);
    let (positive, negative) = match graph.linked(guide_at, "conditioning") {
        // BasicGuider: one conditioning, no negative.
        Some(c) => (Some(c), None),
        None => (
            graph.linked(guide_at, "positive"),
            graph.linked(guide_at, "negative"),
        ),
    };
    for (texts, to) in [
        (graph.texts(positive), &mut g.prompt),
        (graph.texts(negative), &mut g.negative_prompt),
    ] {
        if texts.len() > 1 {
            graph.unresolved.push(format!(
                "{} text encoders combined: their texts joined with line breaks",
                texts.len()
            ));
        }
        *to = Some(texts.join("\n")).filter(|t| !t.is_empty());
    }
    let model = graph
        .linked(guide_at, "model")
        .or_else(|| graph.linked(s, "model"));
    graph.model(model, g);
    let latent = graph.linked(s, "latent_image");
    graph.size(latent, g);
    if g.seed.is_none() {
        graph
            .unresolved
            .push(format!("no seed found at the sampler (node {s}, {class})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_value(v: Value) -> Generation {
        read(v.as_object().unwrap())
    }

    #[test]
    fn a_lora_chain_and_a_controlnet_are_followed() {
        let g = read_value(json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
            "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "a.safetensors", "strength_model": 0.7, "strength_clip": 1.0}},
            "3": {"class_type": "LoraLoader", "inputs": {"model": ["2", 0], "clip": ["2", 1], "lora_name": "b.safetensors", "strength_model": 0.5, "strength_clip": 1.0}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["3", 1]}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["3", 1]}},
            "6": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["4", 0], "negative": ["5", 0], "control_net": ["9", 0], "image": ["9", 0], "strength": 1.0}},
            "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 384, "batch_size": 1}},
            "8": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 12, "cfg": 6.5, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0, "model": ["3", 0], "positive": ["6", 0], "negative": ["6", 1], "latent_image": ["7", 0]}},
            "10": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
            "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "ComfyUI"}}
        }));
        assert_eq!(g.prompt.as_deref(), Some("a cat"));
        assert_eq!(g.negative_prompt.as_deref(), Some("blurry"));
        assert_eq!(g.model.as_deref(), Some("sd15.safetensors"));
        let loras: Vec<(&str, Option<f64>)> = g
            .loras
            .iter()
            .map(|l| (l.name.as_str(), l.weight))
            .collect();
        assert_eq!(
            loras,
            [("a.safetensors", Some(0.7)), ("b.safetensors", Some(0.5))]
        );
        assert_eq!(
            (g.width, g.height, g.seed, g.steps),
            (Some(640), Some(384), Some(5), Some(12))
        );
        assert!(g.unresolved.is_empty(), "{:?}", g.unresolved);
    }

    #[test]
    fn what_cannot_be_resolved_is_said_and_loops_end() {
        let g = read_value(json!({
            "1": {"class_type": "SomeSeedNode", "inputs": {"a": 1, "b": 2}},
            "2": {"class_type": "Loop", "inputs": {"conditioning": ["2", 0]}},
            "3": {"class_type": "KSampler", "inputs": {"seed": ["1", 0], "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "model": ["3", 0], "positive": ["2", 0], "negative": ["404", 0], "latent_image": ["3", 0]}}
        }));
        assert_eq!(g.seed, None);
        assert!(
            g.unresolved
                .iter()
                .any(|u| u.contains("seed comes from node 1 (SomeSeedNode)")),
            "{:?}",
            g.unresolved
        );
        assert!(
            g.unresolved
                .iter()
                .any(|u| u.contains("no text encoder reached from node 2")),
            "{:?}",
            g.unresolved
        );
        assert_eq!(g.steps, Some(4));
    }

    /// Combine nodes that each link twice to the next: 2⁶⁰ paths, one
    /// walk of sixty nodes.
    #[test]
    fn many_ways_to_one_node_are_walked_once() {
        let mut nodes = Map::new();
        for k in 0..60 {
            nodes.insert(
                k.to_string(),
                json!({"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [(k + 1).to_string(), 0], "conditioning_2": [(k + 1).to_string(), 0]}}),
            );
        }
        nodes.insert(
            "60".into(),
            json!({"class_type": "CLIPTextEncode", "inputs": {"text": "deep"}}),
        );
        nodes.insert("99".into(), json!({"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "positive": ["0", 0]}}));
        let t = std::time::Instant::now();
        let g = read(&nodes);
        assert_eq!(g.prompt.as_deref(), Some("deep"));
        assert!(t.elapsed().as_secs() < 2);
    }
}
