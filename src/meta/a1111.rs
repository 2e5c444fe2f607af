//! Automatic1111's `parameters` text (also Forge's, Fooocus's `a1111`
//! scheme's and difflog's own): the prompt, a `Negative prompt:` line, and
//! a last line of `Key: value` pairs, values with a comma, colon or line
//! break JSON-quoted. Split as A1111's own reader splits it
//! (`infotext_utils.parse_generation_parameters`): the last line holds the
//! settings only when at least three pairs are found in it.

use super::{Generation, Lora};

/// The `Key: value` pairs of a settings line, in order, found as A1111's
/// pattern `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)` finds
/// them; quoted values unquoted.
pub(super) fn pairs(line: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match pair_at(&chars, i) {
            Ok((k, v, end)) => {
                out.push((k, v));
                i = end.max(i + 1);
            }
            Err(next) => i = next.max(i + 1),
        }
    }
    out
}

/// One pair starting at `i` (after optional spaces): key, value, and
/// where the match ends; else where the next match may start (no start
/// inside a run of key characters that no colon ends can match, so the
/// scan stays linear).
fn pair_at(c: &[char], mut i: usize) -> Result<(String, String, usize), usize> {
    let word = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    if i >= c.len() || !word(c[i]) {
        return Err(i + 1);
    }
    i += 1;
    while i < c.len() && (word(c[i]) || c[i] == ' ' || c[i] == '-' || c[i] == '/') {
        i += 1;
    }
    if i >= c.len() || c[i] != ':' {
        return Err(i);
    }
    if i - start < 2 {
        return Err(start + 1);
    }
    let key: String = c[start..i].iter().collect();
    i += 1;
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    // A quoted value, if it closes and a comma or the end follows it
    // (looked for within the next comma-free stretch's bound: a quote
    // never closed is not searched for to the end again and again).
    if i < c.len() && c[i] == '"' {
        let mut j = i + 1;
        while j < c.len() && c[j] != '"' && j - i < MAX_QUOTED {
            j += if c[j] == '\\' && j + 1 < c.len() {
                2
            } else {
                1
            };
        }
        if j < c.len() && j > i + 1 && (j + 1 == c.len() || c[j + 1] == ',') {
            let quoted: String = c[i..=j].iter().collect();
            let value = serde_json::from_str::<String>(&quoted).unwrap_or(quoted);
            return Ok((key, value, (j + 2).min(c.len())));
        }
    }
    let mut j = i;
    while j < c.len() && c[j] != ',' {
        j += 1;
    }
    let value: String = c[i..j].iter().collect();
    Ok((key, value, (j + 1).min(c.len())))
}

/// The longest quoted value looked for (A1111's are a few hundred
/// characters: LoRA hashes, prompts of hires passes).
const MAX_QUOTED: usize = 64 * 1024;

/// The longest settings line read.
const MAX_SETTINGS: usize = 256 * 1024;

/// Prompt, negative prompt and the settings line's pairs of a
/// `parameters` text.
pub(super) fn split(text: &str) -> (String, String, Vec<(String, String)>) {
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let last = lines.pop().unwrap_or_default();
    let mut settings = if last.len() <= MAX_SETTINGS {
        pairs(last)
    } else {
        Vec::new()
    };
    if settings.len() < 3 {
        lines.push(last);
        settings.clear();
    }
    let (mut prompt, mut negative) = (String::new(), String::new());
    let mut in_negative = false;
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            in_negative = true;
            line = rest.trim();
        }
        let to = if in_negative {
            &mut negative
        } else {
            &mut prompt
        };
        if !to.is_empty() {
            to.push('\n');
        }
        to.push_str(line);
    }
    (prompt, negative, settings)
}

/// The `<lora:name:weight>` tags of a prompt, in order.
pub(super) fn lora_tags(prompt: &str) -> Vec<Lora> {
    let mut out = Vec::new();
    let mut rest = prompt;
    while let Some(at) = rest.find("<lora:") {
        rest = &rest[at + 6..];
        let Some(end) = rest.find('>') else { break };
        let mut parts = rest[..end].split(':');
        let name = parts.next().unwrap_or_default().trim().to_string();
        let weight = parts.next().and_then(|w| w.trim().parse().ok());
        if !name.is_empty() {
            out.push(Lora {
                name,
                weight,
                hash: None,
            });
        }
        rest = &rest[end + 1..];
    }
    out
}

/// Reads a `parameters` text; `tool` names the tool when another chunk
/// already told (Fooocus), else it is told from the `Version` (Forge's
/// versions begin with `f` and a digit).
pub(super) fn read(text: &str, tool: Option<&str>) -> Generation {
    let (prompt, negative, settings) = split(text);
    let mut g = Generation {
        prompt: Some(prompt.clone()).filter(|p| !p.is_empty()),
        negative_prompt: Some(negative).filter(|n| !n.is_empty()),
        loras: lora_tags(&prompt),
        ..Generation::default()
    };
    if settings.is_empty() {
        g.unresolved
            .push("no settings line (fewer than three `Key: value` pairs): the prompt only".into());
    }
    let mut lora_hashes = Vec::new();
    for (k, v) in &settings {
        let v = v.trim();
        match k.as_str() {
            "Steps" => g.steps = v.parse().ok(),
            "Sampler" => g.sampler = Some(v.to_string()),
            "Schedule type" | "Scheduler" => g.scheduler = Some(v.to_string()),
            "CFG scale" => g.cfg = v.parse().ok().filter(|f: &f64| f.is_finite()),
            "Seed" => g.seed = v.parse().ok(),
            "Size" => {
                if let Some((w, h)) = v.split_once('x') {
                    g.width = w.trim().parse().ok();
                    g.height = h.trim().parse().ok();
                }
            }
            "Model hash" => g.model_hash = Some(v.to_string()),
            "Model" => g.model = Some(v.to_string()),
            "Denoising strength" => g.denoise = v.parse().ok().filter(|f: &f64| f.is_finite()),
            "Version" => g.tool_version = Some(v.to_string()),
            "Lora hashes" => {
                lora_hashes = v
                    .split(',')
                    .filter_map(|p| p.split_once(':'))
                    .map(|(n, h)| (n.trim().to_string(), h.trim().to_string()))
                    .collect();
            }
            _ => {}
        }
    }
    for (name, hash) in lora_hashes {
        match g.loras.iter_mut().find(|l| l.name == name) {
            Some(l) => l.hash = Some(hash),
            None => g.loras.push(Lora {
                name,
                weight: None,
                hash: Some(hash),
            }),
        }
    }
    let forge = g.tool_version.as_deref().is_some_and(|v| {
        let mut c = v.chars();
        c.next() == Some('f') && c.next().is_some_and(|d| d.is_ascii_digit())
    });
    g.tool = match tool {
        Some(t) => t.to_string(),
        None if forge => "Forge".into(),
        None => "AUTOMATIC1111".into(),
    };
    if g.tool == "Fooocus" {
        g.tool_version = g
            .tool_version
            .map(|v| v.trim_start_matches("Fooocus ").to_string());
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_found_as_a1111s_pattern_finds_them() {
        let p = pairs(
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Lora hashes: \"foo: 1a2b, bar: 3c4d\", Version: v1.10.1",
        );
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["Steps", "Sampler", "CFG scale", "Lora hashes", "Version"]
        );
        assert_eq!(p[3].1, "foo: 1a2b, bar: 3c4d");
        // An unterminated quote is read as a plain value up to the comma.
        let p = pairs("Ab: \"x, Bc: 2, Cd: 3");
        assert_eq!(p[0], ("Ab".into(), "\"x".into()));
        assert_eq!(p.len(), 3);
        // A one-letter key does not match (`\w[\w \-/]+` needs two).
        assert!(pairs("x: 1").is_empty());
    }

    /// Hostile lines stay linear: a megabyte of key characters without a
    /// colon, and of quotes never closed.
    #[test]
    fn long_hostile_lines_are_read_in_linear_time() {
        let t = std::time::Instant::now();
        assert!(pairs(&"ab".repeat(500_000)).is_empty());
        let p = pairs(&"Ab: \"x ".repeat(100_000));
        assert_eq!(p.len(), 1);
        let (_, _, s) = split(&format!("prompt\n{}", "Ab: 1, ".repeat(200_000)));
        assert!(s.is_empty(), "a settings line over the bound is not read");
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    }

    #[test]
    fn a_text_without_three_pairs_is_all_prompt() {
        let (p, n, s) = split("a cat: cute\nNegative prompt: dog\nSteps: 3");
        assert_eq!(p, "a cat: cute");
        assert_eq!(n, "dog\nSteps: 3");
        assert!(s.is_empty());
    }

    #[test]
    fn lora_tags_are_read_from_the_prompt() {
        let l = lora_tags("a cat <lora:foo:0.8>, <lora:bar>, <lora:broken");
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].name.as_str(), l[0].weight), ("foo", Some(0.8)));
        assert_eq!((l[1].name.as_str(), l[1].weight), ("bar", None));
    }
}
