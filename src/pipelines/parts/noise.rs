//! Seeded noise: every random number a generation uses comes from here.
//!
//! candle's CPU random generator cannot be seeded (candle issue #3297), and
//! its GPU generators differ from its CPU one, so initial latents, the VAE's
//! latent sample (image-to-image) and ancestral scheduler noise are drawn on
//! the CPU from a ChaCha8 stream seeded with the image's seed, then moved to
//! the device. The same seed gives the same numbers on every machine, so a
//! recorded seed reproduces its image.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A stream of standard-normal noise for one image.
#[derive(Debug, Clone)]
pub struct Noise {
    rng: ChaCha8Rng,
}

impl Noise {
    /// The stream of the image generated with `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next `shape`-sized block of N(0, 1) samples, as an f32 tensor on `device`.
    pub fn normal(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let v: f32 = StandardNormal.sample(&mut self.rng);
                v
            })
            .collect();
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
}
