//! Loading weights: resolving `--model` (`weights`) from the preset table
//! (`presets`), a folder's detected architecture (`detect`), the files each
//! architecture needs, sharded or not (`files`), and the Hugging Face hub
//! cache (`hub`); memory-mapped files (`mapped`) and diffusers tensor names
//! served to candle's models (`remap`).

pub(crate) mod detect;
pub(crate) mod files;
pub(crate) mod hub;
pub mod mapped;
pub mod presets;
pub mod remap;
pub mod weights;
