//! Seeded noise: every random number a generation uses comes from here.
//!
//! candle's CPU random generator cannot be seeded (candle issue #3297), and
//! its GPU generators differ from its CPU one, so initial latents, the VAE's
//! latent sample (image-to-image) and ancestral scheduler noise are drawn on
//! the CPU from a ChaCha8 stream seeded with the image's seed, then moved to
//! the device. The same seed gives the same numbers on every machine, so a
//! recorded seed reproduces its image.
//!
//! With [`Rng::TorchCpu`] the stream is PyTorch's CPU generator instead
//! ([`super::torch_rng`]): a seed then draws what
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`
//! draws, block after block, as diffusers draws a pipeline's noise.

use super::torch_rng::TorchGenerator;
use crate::pipelines::request::Rng;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A stream of standard-normal noise for one image.
#[derive(Debug, Clone)]
pub enum Noise {
    /// difflog's own stream.
    Difflog(Box<ChaCha8Rng>),
    /// PyTorch's CPU generator.
    Torch(Box<TorchGenerator>),
}

impl Noise {
    /// difflog's stream of the image generated with `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise::Difflog(Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// The stream of the image generated with `seed` by generator `rng`
    /// (a restored torch state continues its own stream, whatever the seed).
    pub fn of(rng: &Rng, seed: u64) -> candle_core::Result<Noise> {
        Ok(match rng {
            Rng::Difflog => Noise::new(seed),
            Rng::TorchCpu => Noise::Torch(Box::new(TorchGenerator::new(seed))),
            Rng::TorchCpuState(state) => Noise::Torch(Box::new(
                TorchGenerator::from_state(state).map_err(candle_core::Error::msg)?,
            )),
        })
    }

    /// The next `shape`-sized block of N(0, 1) samples, as an f32 tensor on
    /// `device` (one `torch.randn(shape)` for PyTorch's generator).
    pub fn normal(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match self {
            Noise::Difflog(rng) => (0..n)
                .map(|_| {
                    let v: f32 = StandardNormal.sample(rng.as_mut());
                    v
                })
                .collect(),
            Noise::Torch(g) => g.randn(n),
        };
        Tensor::from_vec(values, shape, &Device::Cpu)?.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_noise_and_another_seed_other_noise() {
        let a = Noise::new(7).normal(&[2, 3], &Device::Cpu).unwrap();
        let b = Noise::new(7).normal(&[2, 3], &Device::Cpu).unwrap();
        let c = Noise::new(8).normal(&[2, 3], &Device::Cpu).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        let mut s = Noise::new(1);
        let first = v(&s.normal(&[4], &Device::Cpu).unwrap());
        let second = v(&s.normal(&[4], &Device::Cpu).unwrap());
        assert_ne!(first, second, "the stream moves on");
    }

    #[test]
    fn torchs_generator_draws_torch_randn_block_after_block() {
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut n = Noise::of(&Rng::TorchCpu, 0).unwrap();
        let first = v(&n.normal(&[1, 4], &Device::Cpu).unwrap());
        let mut g = TorchGenerator::new(0);
        assert_eq!(first, g.randn(4));
        let second = v(&n.normal(&[2, 16], &Device::Cpu).unwrap());
        assert_eq!(second, g.randn(32));
        assert_ne!(
            first,
            v(&Noise::new(0).normal(&[1, 4], &Device::Cpu).unwrap())
        );
        // A recorded state continues its stream.
        let mut g = TorchGenerator::new(3);
        g.randn(5);
        let state: std::sync::Arc<[u8]> = g.state().into();
        let mut n = Noise::of(&Rng::TorchCpuState(state), 99).unwrap();
        assert_eq!(v(&n.normal(&[20], &Device::Cpu).unwrap()), g.randn(20));
        assert!(Noise::of(&Rng::TorchCpuState(vec![0u8; 7].into()), 0).is_err());
    }
}
