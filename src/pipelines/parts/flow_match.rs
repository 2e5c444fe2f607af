//! The flow-matching Euler sampler of FLUX.1 and Stable Diffusion 3: a
//! schedule of noise levels σ from 1 (pure noise) to 0, shifted toward the
//! noisy end, and the step `x ← x + (σ_next − σ)·v`.
//!
//! Its settings are recorded as diffusers' `FlowMatchEulerDiscreteScheduler`
//! config, so a run says exactly which schedule made its images; the
//! resolution-dependent shift of FLUX.1 dev is computed here from the
//! image's token count, as diffusers' FLUX pipeline does.

use serde_json::{json, Value};

/// How the schedule is shifted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// A fixed shift (`σ' = s·σ / (1 + (s − 1)·σ)`); 1 is none.
    Fixed(f64),
    /// FLUX.1 dev's resolution-dependent shift: `mu` grows linearly from
    /// `base` at `base_len` image tokens to `max` at `max_len`, and
    /// `σ' = e^mu / (e^mu + 1/σ − 1)`.
    Dynamic {
        /// `base_shift`.
        base: f64,
        /// `max_shift`.
        max: f64,
        /// `base_image_seq_len`.
        base_len: usize,
        /// `max_image_seq_len`.
        max_len: usize,
    },
}

/// A flow-matching Euler sampler's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatch {
    /// The shift.
    pub shift: Shift,
    /// Training timesteps (the model's time input is σ times this).
    pub train_timesteps: usize,
    /// Schedule spacing: FLUX uses σ = 1 … 1/n; SD3 spaces the timesteps
    /// between the (already shifted) training extremes, as diffusers does.
    pub sd3_spacing: bool,
}

impl FlowMatch {
    /// FLUX.1 schnell: no shift.
    pub fn flux_schnell() -> FlowMatch {
        FlowMatch {
            shift: Shift::Fixed(1.0),
            train_timesteps: 1000,
            sd3_spacing: false,
        }
    }

    /// FLUX.1 dev: the resolution-dependent shift.
    pub fn flux_dev() -> FlowMatch {
        FlowMatch {
            shift: Shift::Dynamic {
                base: 0.5,
                max: 1.15,
                base_len: 256,
                max_len: 4096,
            },
            train_timesteps: 1000,
            sd3_spacing: false,
        }
    }

    /// Stable Diffusion 3 / 3.5: a fixed shift of 3.
    pub fn sd3() -> FlowMatch {
        FlowMatch {
            shift: Shift::Fixed(3.0),
            train_timesteps: 1000,
            sd3_spacing: true,
        }
    }

    /// The `mu` of the dynamic shift for an image of `tokens` latent patches.
    pub fn mu(&self, tokens: usize) -> Option<f64> {
        match self.shift {
            Shift::Fixed(_) => None,
            Shift::Dynamic {
                base,
                max,
                base_len,
                max_len,
            } => {
                let m = (max - base) / (max_len as f64 - base_len as f64);
                Some(base + m * (tokens as f64 - base_len as f64))
            }
        }
    }

    fn shifted(&self, sigma: f64, mu: Option<f64>) -> f64 {
        match (self.shift, mu) {
            (Shift::Dynamic { .. }, Some(mu)) => {
                if sigma <= 0.0 {
                    return 0.0;
                }
                let e = mu.exp();
                e / (e + (1.0 / sigma - 1.0))
            }
            (Shift::Fixed(s), _) => s * sigma / (1.0 + (s - 1.0) * sigma),
            (Shift::Dynamic { .. }, None) => sigma,
        }
    }

    /// The noise levels of `steps` steps for an image of `tokens` latent
    /// patches: `steps + 1` values from the first σ down to 0.
    pub fn sigmas(&self, steps: usize, tokens: usize) -> Vec<f64> {
        let n = steps.max(1) as f64;
        let mu = self.mu(tokens);
        let raw: Vec<f64> = if self.sd3_spacing {
            // diffusers: timesteps spaced between the shifted training
            // extremes (σ = 1 and σ = 1/T, shifted), then shifted again.
            // The training σs are shifted only by a fixed shift (with the
            // dynamic one diffusers leaves them as they are).
            let t = self.train_timesteps as f64;
            let extreme = |s: f64| match self.shift {
                Shift::Fixed(_) => self.shifted(s, None),
                Shift::Dynamic { .. } => s,
            };
            let (hi, lo) = (extreme(1.0) * t, extreme(1.0 / t) * t);
            (0..steps)
                .map(|i| {
                    let f = if steps > 1 { i as f64 / (n - 1.0) } else { 0.0 };
                    (hi + (lo - hi) * f) / t
                })
                .collect()
        } else {
            (0..steps).map(|i| 1.0 - i as f64 / n).collect()
        };
        let mut sigmas: Vec<f64> = raw.into_iter().map(|s| self.shifted(s, mu)).collect();
        sigmas.push(0.0);
        sigmas
    }

    /// The sampler a diffusers `scheduler/scheduler_config.json`
    /// (`FlowMatchEulerDiscreteScheduler`) describes; `sd3_spacing` is the
    /// pipeline's (SD3 spaces the schedule itself, FLUX.1 hands it σs).
    /// Options difflog does not compute (Karras, exponential or beta σs,
    /// inverted σs, a terminal shift, stochastic sampling, another time
    /// shift) are refused, naming the field.
    pub fn from_diffusers(v: &Value, sd3_spacing: bool) -> Result<FlowMatch, String> {
        let class = v["_class_name"]
            .as_str()
            .unwrap_or("FlowMatchEulerDiscreteScheduler");
        if class != "FlowMatchEulerDiscreteScheduler" {
            return Err(format!(
                "_class_name {class:?}: difflog samples with FlowMatchEulerDiscreteScheduler"
            ));
        }
        for flag in [
            "use_karras_sigmas",
            "use_exponential_sigmas",
            "use_beta_sigmas",
            "invert_sigmas",
            "stochastic_sampling",
        ] {
            if v[flag].as_bool() == Some(true) {
                return Err(format!("{flag} = true is not supported"));
            }
        }
        if !v["shift_terminal"].is_null() {
            return Err("shift_terminal is not supported".into());
        }
        if !matches!(v["time_shift_type"].as_str(), None | Some("exponential")) {
            return Err(format!(
                "time_shift_type {}: only \"exponential\" is supported",
                v["time_shift_type"]
            ));
        }
        let num = |k: &str, default: f64| -> Result<f64, String> {
            match &v[k] {
                Value::Null => Ok(default),
                x => x.as_f64().ok_or_else(|| format!("{k}: not a number: {x}")),
            }
        };
        let count = |k: &str, default: usize| -> Result<usize, String> {
            match &v[k] {
                Value::Null => Ok(default),
                x => x
                    .as_u64()
                    .filter(|&n| n > 0 && n <= 1 << 20)
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("{k}: not a positive count: {x}")),
            }
        };
        let shift = if v["use_dynamic_shifting"].as_bool() == Some(true) {
            let (base_len, max_len) = (
                count("base_image_seq_len", 256)?,
                count("max_image_seq_len", 4096)?,
            );
            if base_len == max_len {
                return Err("base_image_seq_len = max_image_seq_len".into());
            }
            Shift::Dynamic {
                base: num("base_shift", 0.5)?,
                max: num("max_shift", 1.15)?,
                base_len,
                max_len,
            }
        } else {
            let s = num("shift", 1.0)?;
            if !(s.is_finite() && s > 0.0) {
                return Err(format!("shift = {s}: must be positive"));
            }
            Shift::Fixed(s)
        };
        Ok(FlowMatch {
            shift,
            train_timesteps: count("num_train_timesteps", 1000)?,
            sd3_spacing,
        })
    }

    /// The recorded settings, as diffusers' scheduler config names them.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": "flow-match-euler",
            "class": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": self.train_timesteps,
        });
        match self.shift {
            Shift::Fixed(s) => {
                v["shift"] = json!(s);
                v["use_dynamic_shifting"] = json!(false);
            }
            Shift::Dynamic {
                base,
                max,
                base_len,
                max_len,
            } => {
                v["shift"] = json!(1.0);
                v["use_dynamic_shifting"] = json!(true);
                v["base_shift"] = json!(base);
                v["max_shift"] = json!(max);
                v["base_image_seq_len"] = json!(base_len);
                v["max_image_seq_len"] = json!(max_len);
            }
        }
        v
    }
}

impl FlowMatch {
    /// The settings as diffusers' `scheduler/scheduler_config.json` of a
    /// `FlowMatchEulerDiscreteScheduler`, diffusers version `version`.
    pub fn to_diffusers(&self, version: &str) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("name");
            o.remove("class");
        }
        v["_class_name"] = json!("FlowMatchEulerDiscreteScheduler");
        v["_diffusers_version"] = json!(version);
        v
    }
}

/// The first step image-to-image runs: diffusers' `steps − int(steps ·
/// strength)` (FLUX and SD3 image-to-image pipelines alike).
pub fn start_step(steps: usize, strength: f64) -> usize {
    steps - ((steps as f64 * strength) as usize).min(steps)
}

/// A strength in (0, 1] that leaves at least one step to run.
pub fn check_strength(steps: usize, strength: f64) -> Result<(), String> {
    if !(strength > 0.0 && strength <= 1.0) {
        return Err(format!("strength {strength} must be in (0, 1]"));
    }
    if start_step(steps, strength) >= steps {
        return Err(format!(
            "strength {strength} × {steps} steps runs no step: raise --strength or --steps"
        ));
    }
    Ok(())
}

/// Clean latents `x0` noised to level σ with noise `eps`: `σ·eps + (1−σ)·x0`,
/// the flow's forward process (where image-to-image starts).
pub fn noised(
    x0: &candle_core::Tensor,
    eps: &candle_core::Tensor,
    sigma: f64,
) -> candle_core::Result<candle_core::Tensor> {
    (eps * sigma)? + (x0 * (1.0 - sigma))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn image_to_image_starts_where_diffusers_does() {
        assert_eq!(start_step(4, 0.6), 2);
        assert_eq!(start_step(28, 1.0), 0);
        assert!(check_strength(4, 0.1).unwrap_err().contains("runs no step"));
        assert!(check_strength(4, 1.5).is_err());
        assert!(check_strength(4, 0.5).is_ok());
    }

    #[test]
    fn schnell_is_an_unshifted_line_to_zero() {
        let s = FlowMatch::flux_schnell().sigmas(4, 4096);
        assert!(close(&s, &[1.0, 0.75, 0.5, 0.25, 0.0]), "{s:?}");
    }

    #[test]
    fn dev_shifts_more_for_bigger_images() {
        let f = FlowMatch::flux_dev();
        // mu at the ends of the line are the base and max shifts.
        assert!((f.mu(256).unwrap() - 0.5).abs() < 1e-12);
        assert!((f.mu(4096).unwrap() - 1.15).abs() < 1e-12);
        let small = f.sigmas(4, 256);
        let big = f.sigmas(4, 4096);
        assert_eq!(small.first(), Some(&1.0));
        assert_eq!(big.last(), Some(&0.0));
        // σ = 0.5 with mu = 1.15: e^1.15 / (e^1.15 + 1).
        let e = 1.15f64.exp();
        assert!((big[2] - e / (e + 1.0)).abs() < 1e-12, "{big:?}");
        assert!(small[2] < big[2]);
        assert!(big.windows(2).all(|w| w[0] > w[1]), "decreasing");
    }

    #[test]
    fn sd3_spaces_between_the_shifted_extremes() {
        let s = FlowMatch::sd3().sigmas(2, 4096);
        // First: shift(1) = 1; last before 0: the training minimum 1/1000
        // shifted twice (3/1002 ≈ 0.002994, then shifted again).
        let lo = 3.0 * 0.001 / (1.0 + 2.0 * 0.001);
        let again = 3.0 * lo / (1.0 + 2.0 * lo);
        assert!(close(&s, &[1.0, again, 0.0]), "{s:?}");
        assert_eq!(FlowMatch::sd3().to_json()["shift"], 3.0);
        assert_eq!(
            FlowMatch::flux_dev().to_json()["use_dynamic_shifting"],
            true
        );
    }
}
