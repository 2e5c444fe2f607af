//! The tiny tokenizers' sizes: the model presets (`ModelConfig::tiny()`,
//! FLUX's and SD3's) size their embeddings from them, and the builders in
//! this folder make tokenizers that fit; kept apart so that the presets
//! need nothing else of the builders.

/// Vocabulary size of the tiny tokenizer: 256 byte tokens plus start and end.
pub const VOCAB_SIZE: usize = 258;
/// Embedding rows of the tiny T5 encoder (its tokenizer uses fewer, as
/// T5's own 32,100 tokens sit in 32,128 rows).
pub const T5_VOCAB_SIZE: usize = 128;
