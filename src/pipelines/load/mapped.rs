//! Weight files memory-mapped for candle: one place holds the `unsafe` of
//! mapping (safetensors files, single or sharded) and the reason it is sound.

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result};
use candle_nn::VarBuilder;
use std::path::Path;

/// The tensors of `files` (one file or the shards of one), mapped read-only.
pub fn mapped<P: AsRef<Path>>(files: &[P]) -> Result<MmapedSafetensors> {
    // SAFETY: the files are mapped read-only and difflog never writes a
    // weight file while it is mapped; a file changed underneath by another
    // process is outside what any mmap-based loader can guard against.
    unsafe { MmapedSafetensors::multi(files) }
}

/// A var builder over the mapped `files`, in `dtype` on `device`.
pub fn mapped_vb<P: AsRef<Path>>(
    files: &[P],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_backend(
        Box::new(mapped(files)?),
        dtype,
        device.clone(),
    ))
}
