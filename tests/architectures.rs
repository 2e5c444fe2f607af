//! The real Stable Diffusion architectures are built and run: for each
//! preset, the text encoders, UNet and VAE are built with zero weights and
//! run through one denoising step and a decode at 64×64 px, checking shapes.
//!
//! Large (SDXL needs ~14 GB of memory in f32), so it is `#[ignore]`d in the
//! default run; `scripts/test` runs it on its own:
//! `cargo test --test architectures -- --ignored --test-threads=1`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use difflog::pipelines::sd::model::{ModelConfig, Modules};

fn run_preset(name: &str, cfg: ModelConfig) {
    let t = std::time::Instant::now();
    let dev = Device::Cpu;
    let zeros = || VarBuilder::zeros(DType::F32, &dev);
    let m = Modules::build(
        &cfg,
        cfg.text.iter().map(|_| zeros()).collect(),
        zeros(),
        zeros(),
    )
    .unwrap_or_else(|e| panic!("{name}: build failed: {e}"));
    let mut parts = Vec::new();
    let mut pooled = None;
    for (enc, tc) in m.text.iter().zip(&cfg.text) {
        let ids = Tensor::zeros((1, tc.max_tokens()), DType::U32, &dev).unwrap();
        let (h, p) = enc.encode_pooled(&ids, tc.max_tokens() - 1).unwrap();
        assert_eq!(h.dims()[..2], [1, tc.max_tokens()], "{name}");
        parts.push(h);
        pooled = p;
    }
    // SDXL's micro-conditioning: the pooled output and its size numbers,
    // as wide as the UNet's add_embedding takes them.
    let added = cfg.unet.text_time.map(|tt| {
        let p = pooled.clone().expect("an SDXL UNet's last encoder pools");
        let n = (tt.input_dim - p.dims()[1]) / tt.time_embed_dim;
        (p, Tensor::zeros((1, n), DType::F32, &dev).unwrap())
    });
    let text = Tensor::cat(&parts, candle_core::D::Minus1).unwrap();
    assert_eq!(
        text.dims()[2],
        cfg.unet.cross_attention_dim,
        "{name}: text width != UNet cross-attention dim"
    );
    let latents = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
    let noise = m
        .unet
        .forward(&latents, 999.0, &text, added.as_ref().map(|(p, s)| (p, s)))
        .unwrap();
    assert_eq!(noise.dims(), [1, 4, 8, 8], "{name}");
    let image = m.vae.decode(&latents).unwrap();
    assert_eq!(image.dims(), [1, 3, 64, 64], "{name}");
    eprintln!(
        "{name}: built and ran in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs ~14 GB and a minute; scripts/test runs it on its own"]
fn every_real_preset_builds_and_runs_one_step_with_zero_weights() {
    run_preset("sd15", ModelConfig::sd15());
    run_preset("sd21 (and sd-turbo)", ModelConfig::sd21());
    run_preset("sdxl (and sdxl-turbo)", ModelConfig::sdxl());
    run_preset("sdxl-refiner", ModelConfig::sdxl_refiner());
}
