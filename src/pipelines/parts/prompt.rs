//! Prompts to token ids for the CLIP and T5 tokenizers of the flow
//! transformers (FLUX.1, SD3): padded to the encoder's length; a CLIP prompt
//! over 77 tokens is cut with its end token kept, as diffusers does (T5
//! carries long prompts), and a T5 prompt over `max_sequence_length` is
//! refused, so what is recorded is what the model saw.

use crate::pipeline::PipelineError;
use crate::pipelines::convert::shorten;
use std::path::Path;
use tokenizers::Tokenizer;

fn err(msg: impl Into<String>) -> PipelineError {
    msg.into().into()
}

fn load(path: &Path) -> Result<Tokenizer, PipelineError> {
    Tokenizer::from_file(path)
        .map_err(|e| err(format!("{}: cannot load tokenizer: {e}", path.display())))
}

fn id(t: &Tokenizer, path: &Path, token: &str) -> Result<u32, PipelineError> {
    t.token_to_id(token)
        .ok_or_else(|| err(format!("{}: no token {token:?}", path.display())))
}

fn encode(t: &Tokenizer, text: &str) -> Result<Vec<u32>, PipelineError> {
    Ok(t.encode(text, true)
        .map_err(|e| err(format!("tokenizing {text:?}: {e}")))?
        .get_ids()
        .to_vec())
}

/// A CLIP tokenizer with its padding and end tokens.
pub struct ClipTokens {
    tokenizer: Tokenizer,
    pad: u32,
    eos: u32,
    max: usize,
}

impl ClipTokens {
    /// Loads `tokenizer.json`; `pad` is the padding token, `max` the length.
    pub fn load(path: &Path, pad: &str, max: usize) -> Result<ClipTokens, PipelineError> {
        let tokenizer = load(path)?;
        Ok(ClipTokens {
            pad: id(&tokenizer, path, pad)?,
            eos: id(&tokenizer, path, "<|endoftext|>")?,
            tokenizer,
            max,
        })
    }

    /// The ids, exactly `max` long, and the position of the end token
    /// (where CLIP's pooled output is read).
    pub fn ids(&self, text: &str) -> Result<(Vec<u32>, usize), PipelineError> {
        let mut ids = encode(&self.tokenizer, text)?;
        if ids.len() > self.max {
            ids.truncate(self.max - 1);
            ids.push(self.eos);
        }
        let eos = ids.iter().position(|&i| i == self.eos).unwrap_or(0);
        ids.resize(self.max, self.pad);
        Ok((ids, eos))
    }
}

/// A T5 tokenizer (`<pad>` padding, `</s>` appended by its template).
pub struct T5Tokens {
    tokenizer: Tokenizer,
    pad: u32,
}

impl T5Tokens {
    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<T5Tokens, PipelineError> {
        let tokenizer = load(path)?;
        Ok(T5Tokens {
            pad: id(&tokenizer, path, "<pad>")?,
            tokenizer,
        })
    }

    /// The ids, exactly `max` (the call's `max_sequence_length`) long;
    /// longer is refused.
    pub fn ids(&self, text: &str, max: usize) -> Result<Vec<u32>, PipelineError> {
        let mut ids = encode(&self.tokenizer, text)?;
        if ids.len() > max {
            return Err(err(format!(
                "prompt is too long for T5: {} tokens, this model takes at most {} (max_sequence_length, end token included): {:?}",
                ids.len(),
                max,
                shorten(text)
            )));
        }
        ids.resize(max, self.pad);
        Ok(ids)
    }
}
