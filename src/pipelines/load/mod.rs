//! Loading weights: presets, model folders, the hub and shards
//! (`weights`), memory-mapped files (`mapped`) and diffusers tensor names
//! served to candle's models (`remap`).

pub mod mapped;
pub mod remap;
pub mod weights;
