//! Schedulers: which one, with which settings, recorded in full.
//!
//! DDIM and Euler ancestral are difflog's own, computed as diffusers'
//! `DDIMScheduler` and `EulerAncestralDiscreteScheduler` compute them
//! (candle's DDIM spaces a trailing schedule otherwise, and its Euler
//! ancestral draws from the unseedable CPU generator); their noise comes from
//! the image's [`Noise`] stream. UniPC is difflog's too, as diffusers'
//! `UniPCMultistepScheduler` (candle's "UniPC" is an EDM DPM-Solver with
//! Karras sigmas, another sampler). Settings are plain data ([`SchedulerSettings`]) so that
//! the `pipeline` record holds the complete configuration.

use crate::pipelines::parts::noise::Noise;
use candle_core::{Result, Tensor};
use candle_transformers::models::stable_diffusion::schedulers::Scheduler;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// The schedulers `difflog generate --scheduler` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// Denoising diffusion implicit models, eta 0 (deterministic).
    Ddim,
    /// Euler ancestral (stochastic; noise from the image's seed).
    EulerAncestral,
    /// UniPC multistep (deterministic).
    UniPc,
}

impl SchedulerKind {
    /// Parses `ddim`, `euler-a` or `unipc`.
    pub fn parse(s: &str) -> Option<SchedulerKind> {
        match s {
            "ddim" => Some(SchedulerKind::Ddim),
            "euler-a" | "euler_a" | "euler-ancestral" => Some(SchedulerKind::EulerAncestral),
            "unipc" | "uni-pc" => Some(SchedulerKind::UniPc),
            _ => None,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::UniPc => "unipc",
        }
    }
}

/// What the model was trained to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise.
    Epsilon,
    /// The velocity (SD 2.1 at 768 px).
    VPrediction,
}

/// How inference timesteps are spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// `i * ratio + offset` (SD 1.5, 2.1, XL).
    Leading,
    /// From the last training step down (Turbo models).
    Trailing,
    /// Evenly over `[0, T-1]`.
    Linspace,
}

/// A scheduler and its complete configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerSettings {
    /// Which scheduler.
    pub kind: SchedulerKind,
    /// What the model predicts.
    pub prediction_type: Prediction,
    /// Training timesteps.
    pub train_timesteps: usize,
    /// First beta of the (scaled linear) schedule.
    pub beta_start: f64,
    /// Last beta.
    pub beta_end: f64,
    /// Timestep spacing.
    pub timestep_spacing: Spacing,
    /// Offset added to leading timesteps.
    pub steps_offset: usize,
    /// DDIM's eta (0: deterministic).
    pub eta: f64,
}

impl SchedulerSettings {
    /// The settings Stable Diffusion checkpoints ship with, for `kind`.
    pub fn new(
        kind: SchedulerKind,
        prediction_type: Prediction,
        timestep_spacing: Spacing,
    ) -> Self {
        SchedulerSettings {
            kind,
            prediction_type,
            train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            timestep_spacing,
            steps_offset: 1,
            eta: 0.0,
        }
    }

    /// The scheduler's configuration as diffusers writes it
    /// (`scheduler/scheduler_config.json`): DDIM and Euler ancestral as
    /// diffusers' `DDIMScheduler` and `EulerAncestralDiscreteScheduler`
    /// with these settings, and
    /// UniPC as diffusers' `UniPCMultistepScheduler`: order 2, bh2, x0
    /// prediction, lower order at the end.)
    pub fn to_diffusers(&self) -> Value {
        let spacing = match self.timestep_spacing {
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
            Spacing::Linspace => "linspace",
        };
        let prediction = match self.prediction_type {
            Prediction::Epsilon => "epsilon",
            Prediction::VPrediction => "v_prediction",
        };
        let mut v = json!({
            "num_train_timesteps": self.train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": "scaled_linear",
            "timestep_spacing": spacing,
            "steps_offset": self.steps_offset,
            "prediction_type": prediction,
        });
        match self.kind {
            SchedulerKind::Ddim => {
                v["_class_name"] = json!("DDIMScheduler");
                v["clip_sample"] = json!(false);
                v["set_alpha_to_one"] = json!(false);
            }
            SchedulerKind::EulerAncestral => {
                v["_class_name"] = json!("EulerAncestralDiscreteScheduler");
            }
            SchedulerKind::UniPc => {
                v["_class_name"] = json!("UniPCMultistepScheduler");
                v["solver_order"] = json!(2);
                v["solver_type"] = json!("bh2");
                v["predict_x0"] = json!(true);
                v["lower_order_final"] = json!(true);
            }
        }
        v
    }

    /// The full configuration as recorded in the `pipeline` event.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["name"] = json!(self.kind.name());
        v["beta_schedule"] = json!("scaled_linear");
        if self.kind == SchedulerKind::UniPc {
            v["solver_order"] = json!(2);
            v["solver_type"] = json!("bh2");
            v["predict_x0"] = json!(true);
            v["lower_order_final"] = json!(true);
        }
        v
    }

    /// Builds a scheduler for `steps` inference steps; `noise` feeds the
    /// stochastic ones.
    pub fn build(&self, steps: usize, noise: Arc<Mutex<Noise>>) -> Result<Box<dyn Scheduler>> {
        if steps == 0 {
            candle_core::bail!("the number of inference steps must be at least 1");
        }
        if steps > self.train_timesteps {
            candle_core::bail!(
                "{steps} inference steps exceed the {} training timesteps",
                self.train_timesteps
            );
        }
        match self.kind {
            SchedulerKind::Ddim => Ok(Box::new(Ddim::new(self, steps, noise))),
            SchedulerKind::UniPc => Ok(Box::new(UniPc::new(self, steps))),
            SchedulerKind::EulerAncestral => Ok(Box::new(EulerAncestral::new(self, steps, noise)?)),
        }
    }
}

/// The inference timesteps of `steps` steps, spread as diffusers spreads
/// them (`leading`: multiples of T / steps plus the offset; `trailing`:
/// rounded down from T; `linspace`: evenly over [0, T − 1]), first to last.
fn spaced_timesteps(s: &SchedulerSettings, steps: usize) -> Vec<usize> {
    let t = s.train_timesteps;
    match s.timestep_spacing {
        Spacing::Leading => {
            let ratio = t / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + s.steps_offset).min(t - 1))
                .collect()
        }
        Spacing::Trailing => {
            let ratio = t as f64 / steps as f64;
            (0..steps)
                .map(|i| ((t as f64 - i as f64 * ratio).round() as usize).saturating_sub(1))
                .collect()
        }
        Spacing::Linspace => (0..steps)
            .rev()
            .map(|i| {
                let x = if steps > 1 {
                    i as f64 * (t - 1) as f64 / (steps - 1) as f64
                } else {
                    0.0
                };
                x.round() as usize
            })
            .collect(),
    }
}

/// The cumulative products of 1 − beta over the scaled-linear schedule,
/// in float32 as diffusers computes them (betas from a float32 linspace of
/// their square roots, squared; a float32 running product).
fn alphas_cumprod(s: &SchedulerSettings) -> Vec<f64> {
    let t = s.train_timesteps;
    let (b0, b1) = (s.beta_start.sqrt(), s.beta_end.sqrt());
    let mut acc = 1f32;
    (0..t)
        .map(|i| {
            let frac = if t > 1 {
                i as f64 / (t - 1) as f64
            } else {
                0.0
            };
            let root = (b0 + (b1 - b0) * frac) as f32;
            acc *= 1.0 - root * root;
            f64::from(acc)
        })
        .collect()
}

/// `original` noised to training step `timestep`: sqrt(ᾱ)·x + sqrt(1 − ᾱ)·ε.
fn vp_add_noise(
    alphas_cumprod: &[f64],
    original: &Tensor,
    noise: Tensor,
    timestep: usize,
) -> Result<Tensor> {
    let a = alphas_cumprod[timestep.min(alphas_cumprod.len() - 1)];
    (original * a.sqrt())? + (noise * (1.0 - a).sqrt())?
}

/// DDIM (diffusers' `DDIMScheduler`, `clip_sample` and `set_alpha_to_one`
/// off as Stable Diffusion ships it): deterministic at eta 0, else noise
/// from the image's stream.
struct Ddim {
    timesteps: Vec<usize>,
    alphas_cumprod: Vec<f64>,
    /// T / steps, by which each step goes back.
    ratio: usize,
    prediction: Prediction,
    eta: f64,
    noise: Arc<Mutex<Noise>>,
}

impl Ddim {
    fn new(s: &SchedulerSettings, steps: usize, noise: Arc<Mutex<Noise>>) -> Ddim {
        Ddim {
            timesteps: spaced_timesteps(s, steps),
            alphas_cumprod: alphas_cumprod(s),
            ratio: s.train_timesteps / steps,
            prediction: s.prediction_type,
            eta: s.eta,
            noise,
        }
    }

    fn alpha(&self, t: usize) -> f64 {
        self.alphas_cumprod[t.min(self.alphas_cumprod.len() - 1)]
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: Tensor, timestep: usize) -> Result<Tensor> {
        vp_add_noise(&self.alphas_cumprod, original, noise, timestep)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: Tensor, _timestep: usize) -> Result<Tensor> {
        Ok(sample)
    }

    fn step(&mut self, model_output: &Tensor, timestep: usize, sample: &Tensor) -> Result<Tensor> {
        let a_t = self.alpha(timestep);
        // Before the first training step: alpha of step 0 (set_alpha_to_one off).
        let a_prev = match timestep.checked_sub(self.ratio) {
            Some(p) => self.alpha(p),
            None => self.alphas_cumprod[0],
        };
        let b_t = 1.0 - a_t;
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => (
                ((sample - (model_output * b_t.sqrt())?)? / a_t.sqrt())?,
                model_output.clone(),
            ),
            Prediction::VPrediction => (
                ((sample * a_t.sqrt())? - (model_output * b_t.sqrt())?)?,
                ((model_output * a_t.sqrt())? + (sample * b_t.sqrt())?)?,
            ),
        };
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let std = self.eta * variance.max(0.0).sqrt();
        let direction = (eps * (1.0 - a_prev - std * std).max(0.0).sqrt())?;
        let prev = ((x0 * a_prev.sqrt())? + direction)?;
        if self.eta > 0.0 {
            let z = self
                .noise
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .normal(prev.dims(), prev.device())?
                .to_dtype(prev.dtype())?;
            return prev + (z * std)?;
        }
        Ok(prev)
    }
}

/// UniPC, as diffusers' `UniPCMultistepScheduler` computes it with the
/// settings Stable Diffusion pipelines use: solver order 2, the bh2
/// variant, predicting x0, the corrector on every step but the first,
/// lower order on the last step. Deterministic.
struct UniPc {
    timesteps: Vec<usize>,
    /// sigma per inference step, plus a final 0.
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
    prediction: Prediction,
    /// The last two converted model outputs (x0 predictions), oldest first.
    outputs: [Option<Tensor>; 2],
    last_sample: Option<Tensor>,
    this_order: usize,
    lower_order_nums: usize,
    step_index: Option<usize>,
}

/// alpha_t and sigma_t of a sigma.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// log alpha − log sigma.
fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

/// UniPC's coefficients for `order` with step `hh` (−h): e^hh − 1, the bh2
/// B(h), and b_1..b_order.
fn unipc_b(hh: f64, order: usize) -> (f64, f64, Vec<f64>) {
    let h_phi_1 = hh.exp_m1();
    let b_h = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1.0;
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        b.push(h_phi_k * factorial / b_h);
        factorial *= (i + 1) as f64;
        h_phi_k = h_phi_k / hh - 1.0 / factorial;
    }
    (h_phi_1, b_h, b)
}

impl UniPc {
    fn new(s: &SchedulerSettings, steps: usize) -> UniPc {
        let t = s.train_timesteps;
        // UniPC spreads steps + 1 points and drops the last (diffusers).
        let timesteps: Vec<usize> = match s.timestep_spacing {
            Spacing::Leading => {
                let ratio = t / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|i| (i * ratio + s.steps_offset).min(t - 1))
                    .collect()
            }
            Spacing::Trailing => spaced_timesteps(s, steps),
            Spacing::Linspace => (1..=steps)
                .rev()
                .map(|i| (i as f64 * (t - 1) as f64 / steps as f64).round() as usize)
                .collect(),
        };
        let alphas_cumprod = alphas_cumprod(s);
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&ts| {
                let a = alphas_cumprod[ts.min(t - 1)];
                // float32, as diffusers keeps them
                f64::from(((1.0 - a) / a).sqrt() as f32)
            })
            .collect();
        sigmas.push(0.0);
        UniPc {
            timesteps,
            sigmas,
            alphas_cumprod,
            prediction: s.prediction_type,
            outputs: [None, None],
            last_sample: None,
            this_order: 1,
            lower_order_nums: 0,
            step_index: None,
        }
    }

    /// The model's output as a prediction of x0 at step `k`.
    fn to_x0(&self, model_output: &Tensor, sample: &Tensor, k: usize) -> Result<Tensor> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[k]);
        match self.prediction {
            Prediction::Epsilon => (sample - (model_output * sigma)?)? / alpha,
            Prediction::VPrediction => (sample * alpha)? - (model_output * sigma)?,
        }
    }

    /// The predictor: from `sample` at step `k` to step `k + 1`.
    fn predict(&self, sample: &Tensor, k: usize, order: usize) -> Result<Tensor> {
        let Some(m0) = &self.outputs[1] else {
            candle_core::bail!("UniPC: no model output to step from");
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[k + 1]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[k]);
        let lambda_s0 = lambda(self.sigmas[k]);
        let h = lambda(self.sigmas[k + 1]) - lambda_s0;
        let hh = -h;
        let (h_phi_1, b_h, _) = unipc_b(hh, order);
        let base = ((sample * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        match (order, &self.outputs[0]) {
            (2, Some(m1)) if k >= 1 => {
                let rk = (lambda(self.sigmas[k - 1]) - lambda_s0) / h;
                let d1 = ((m1 - m0)? / rk)?;
                base - (d1 * (alpha_t * b_h * 0.5))?
            }
            _ => Ok(base),
        }
    }

    /// The corrector: `this_x0` at step `k` corrects the step taken from
    /// `last` at step `k − 1` with `order`.
    fn correct(&self, this_x0: &Tensor, last: &Tensor, k: usize, order: usize) -> Result<Tensor> {
        let Some(m0) = &self.outputs[1] else {
            candle_core::bail!("UniPC: no model output to correct from");
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[k]);
        let (_, sigma_s0) = alpha_sigma(self.sigmas[k - 1]);
        let lambda_s0 = lambda(self.sigmas[k - 1]);
        let h = lambda(self.sigmas[k]) - lambda_s0;
        let hh = -h;
        let (h_phi_1, b_h, b) = unipc_b(hh, order);
        let base = ((last * (sigma_t / sigma_s0))? - (m0 * (alpha_t * h_phi_1))?)?;
        let d1_t = (this_x0 - m0)?;
        match (order, &self.outputs[0]) {
            (2, Some(m1)) if k >= 2 => {
                let rk = (lambda(self.sigmas[k - 2]) - lambda_s0) / h;
                let d1 = ((m1 - m0)? / rk)?;
                // Solve [[1, 1], [rk, 1]] rho = b.
                let rho0 = (b[0] - b[1]) / (1.0 - rk);
                let rho1 = b[0] - rho0;
                let res = ((d1 * rho0)? + (d1_t * rho1)?)?;
                base - (res * (alpha_t * b_h))?
            }
            _ => base - (d1_t * (alpha_t * b_h * 0.5))?,
        }
    }
}

impl Scheduler for UniPc {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: Tensor, timestep: usize) -> Result<Tensor> {
        vp_add_noise(&self.alphas_cumprod, original, noise, timestep)
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: Tensor, _timestep: usize) -> Result<Tensor> {
        Ok(sample)
    }

    fn step(&mut self, model_output: &Tensor, timestep: usize, sample: &Tensor) -> Result<Tensor> {
        let k = match self.step_index {
            Some(k) => k,
            None => match self.timesteps.iter().position(|&t| t == timestep) {
                Some(i) => i,
                None => candle_core::bail!("timestep {timestep} is not one of this schedule's"),
            },
        };
        let x0 = self.to_x0(model_output, sample, k)?;
        let sample = match &self.last_sample {
            Some(last) if k > 0 => self.correct(&x0, last, k, self.this_order)?,
            _ => sample.clone(),
        };
        self.outputs[0] = self.outputs[1].take();
        self.outputs[1] = Some(x0);
        let order = 2.min(self.timesteps.len() - k);
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predict(&sample, k, self.this_order)?;
        self.lower_order_nums = (self.lower_order_nums + 1).min(2);
        self.step_index = Some(k + 1);
        Ok(prev)
    }
}

/// Euler ancestral sampling with seeded noise.
struct EulerAncestral {
    timesteps: Vec<usize>,
    /// sigma per inference step, plus a final 0.
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: Prediction,
    noise: Arc<Mutex<Noise>>,
    /// sigma of every training timestep, for `add_noise`.
    train_sigmas: Vec<f64>,
}

impl EulerAncestral {
    fn new(s: &SchedulerSettings, steps: usize, noise: Arc<Mutex<Noise>>) -> Result<Self> {
        let t = s.train_timesteps;
        let (b0, b1) = (s.beta_start.sqrt(), s.beta_end.sqrt());
        let mut alpha_cumprod = 1.0;
        let mut train_sigmas = Vec::with_capacity(t);
        for i in 0..t {
            let frac = if t > 1 {
                i as f64 / (t - 1) as f64
            } else {
                0.0
            };
            let beta = (b0 + (b1 - b0) * frac).powi(2);
            alpha_cumprod *= 1.0 - beta;
            train_sigmas.push(((1.0 - alpha_cumprod) / alpha_cumprod).sqrt());
        }
        let timesteps = spaced_timesteps(s, steps);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&ts| train_sigmas[ts]).collect();
        sigmas.push(0.0);
        let max_sigma = sigmas.iter().cloned().fold(0.0, f64::max);
        let init_noise_sigma = match s.timestep_spacing {
            Spacing::Linspace | Spacing::Trailing => max_sigma,
            Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(EulerAncestral {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: s.prediction_type,
            noise,
            train_sigmas,
        })
    }

    fn index(&self, timestep: usize) -> Result<usize> {
        match self.timesteps.iter().position(|&t| t == timestep) {
            Some(i) => Ok(i),
            None => candle_core::bail!("timestep {timestep} is not one of this schedule's"),
        }
    }
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn add_noise(&self, original: &Tensor, noise: Tensor, timestep: usize) -> Result<Tensor> {
        let sigma = self.train_sigmas[timestep.min(self.train_sigmas.len() - 1)];
        original + (noise * sigma)?
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: Tensor, timestep: usize) -> Result<Tensor> {
        let sigma = self.sigmas[self.index(timestep)?];
        sample / (sigma * sigma + 1.0).sqrt()
    }

    fn step(&mut self, model_output: &Tensor, timestep: usize, sample: &Tensor) -> Result<Tensor> {
        let i = self.index(timestep)?;
        let (sigma, sigma_to) = (self.sigmas[i], self.sigmas[i + 1]);
        let denoised = match self.prediction {
            Prediction::Epsilon => (sample - (model_output * sigma)?)?,
            Prediction::VPrediction => {
                let c = sigma * sigma + 1.0;
                ((model_output * (-sigma / c.sqrt()))? + (sample / c)?)?
            }
        };
        let sigma_up = if sigma > 0.0 {
            (sigma_to * sigma_to * (sigma * sigma - sigma_to * sigma_to) / (sigma * sigma)).sqrt()
        } else {
            0.0
        };
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let derivative = ((sample - &denoised)? / sigma)?;
        let prev = (sample + (derivative * (sigma_down - sigma))?)?;
        if sigma_up == 0.0 {
            return Ok(prev);
        }
        let noise = self
            .noise
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .normal(sample.dims(), sample.device())?
            .to_dtype(sample.dtype())?;
        prev + (noise * sigma_up)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(kind: SchedulerKind, seed: u64) -> Vec<f32> {
        let s = SchedulerSettings::new(kind, Prediction::Epsilon, Spacing::Trailing);
        let noise = Arc::new(Mutex::new(Noise::new(seed)));
        let mut sch = s.build(4, Arc::clone(&noise)).unwrap();
        let mut x = noise
            .lock()
            .unwrap()
            .normal(&[1, 4, 2, 2], &Device::Cpu)
            .unwrap();
        x = (x * sch.init_noise_sigma()).unwrap();
        for t in sch.timesteps().to_vec() {
            let inp = sch.scale_model_input(x.clone(), t).unwrap();
            let eps = (inp * 0.5).unwrap();
            x = sch.step(&eps, t, &x).unwrap();
        }
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn every_scheduler_is_reproducible_from_its_seed() {
        for kind in [
            SchedulerKind::Ddim,
            SchedulerKind::EulerAncestral,
            SchedulerKind::UniPc,
        ] {
            let a = run(kind, 3);
            assert_eq!(a, run(kind, 3), "{kind:?}");
            assert_ne!(a, run(kind, 4), "{kind:?}");
            assert!(a.iter().all(|v| v.is_finite()), "{kind:?}");
        }
    }

    #[test]
    fn zero_steps_is_an_error() {
        let s = SchedulerSettings::new(SchedulerKind::Ddim, Prediction::Epsilon, Spacing::Leading);
        assert!(s.build(0, Arc::new(Mutex::new(Noise::new(0)))).is_err());
    }
}
