//! Optimisers over parameter groups whose state can be saved and loaded: SGD
//! (momentum, Nesterov, weight decay) and Adam / AdamW, computed exactly as
//! `torch.optim.SGD`, `torch.optim.Adam` and `torch.optim.AdamW` do.
//!
//! candle-nn's own optimisers keep their state private and its SGD has no
//! momentum, so a run could not resume; these export every buffer with
//! [`Optimizer::state`] and take it back with [`Optimizer::load_state`].
//!
//! A parameter group is a list of named [`Var`]s with a learning-rate scale (for
//! example 0.1 for a pretrained backbone). A frozen part of a model is simply
//! left out of every group. Vars that get no gradient in a step are skipped.

use std::collections::{HashMap, HashSet};

use candle::backprop::GradStore;
use candle::{DType, Device, Shape, Tensor, Var};
use candle_nn::VarMap;

use crate::kernels::{self, AdamStep};

/// Returns a plain message error. Unlike `candle::bail!` it attaches no
/// backtrace, which would otherwise fill the message when `RUST_BACKTRACE` is set.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(candle::Error::Msg(format!($($arg)*)))
    };
}

/// Suffixes of the BatchNorm statistics that a `VarMap` may hold but that are
/// not trained by gradient descent.
const NOT_TRAINED_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Named variables that share a learning-rate scale.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The group name; state keys start with it (`"{group}.{var}.m"`).
    pub name: String,
    /// `(name, var)` pairs, sorted by name.
    pub vars: Vec<(String, Var)>,
    /// The group learns at `lr * lr_scale`.
    pub lr_scale: f64,
}

/// Collects the trainable vars of `varmap` into a group, sorted by name.
///
/// With `prefix = Some(p)` only keys starting with `p` are taken: `Some("down")`
/// takes `down1.*` to `down4.*`; end the prefix with a dot (`Some("down1.")`)
/// to take exactly one module. BatchNorm running statistics (keys ending in
/// `running_mean`, `running_var` or `num_batches_tracked`) are never taken.
pub fn param_group(name: &str, varmap: &VarMap, prefix: Option<&str>, lr_scale: f64) -> ParamGroup {
    let under_prefix = |key: &str| prefix.is_none_or(|p| key.starts_with(p));
    // A poisoned lock only means another thread panicked while holding it; the
    // map itself is still usable.
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(key, _)| under_prefix(key))
        .filter(|(key, _)| !NOT_TRAINED_SUFFIXES.iter().any(|s| key.ends_with(s)))
        .map(|(key, var)| (key.clone(), var.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    ParamGroup {
        name: name.to_string(),
        vars,
        lr_scale,
    }
}

/// A gradient-descent optimiser whose state can be saved and restored.
pub trait Optimizer {
    /// Updates every var of every group that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> candle::Result<()>;
    /// The base learning rate (each group uses it times its `lr_scale`).
    fn learning_rate(&self) -> f64;
    /// Sets the base learning rate, for example from a schedule.
    fn set_learning_rate(&mut self, lr: f64);
    /// All buffers and step counts, keyed `"{group}.{var}.{m|v|buf|step}"`,
    /// plus `"step"`, the number of calls to [`Optimizer::step`].
    fn state(&self) -> candle::Result<HashMap<String, Tensor>>;
    /// Restores a state from [`Optimizer::state`]. Errors list every missing
    /// key and every key whose shape is wrong; nothing changes on error.
    /// Extra keys are ignored.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle::Result<()>;
}

/// Checks group names and that no var is in two groups.
fn check_groups(groups: &[ParamGroup]) -> candle::Result<()> {
    let mut group_names = HashSet::new();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for group in groups {
        if group.name.is_empty() || group.name == "step" {
            fail!("parameter group name {:?} is not allowed", group.name);
        }
        if !group_names.insert(group.name.as_str()) {
            fail!("two parameter groups are named {:?}", group.name);
        }
        if !(group.lr_scale.is_finite() && group.lr_scale >= 0.0) {
            fail!(
                "parameter group {:?} has lr_scale {}, expected a finite value >= 0",
                group.name,
                group.lr_scale
            );
        }
        for (var_name, _) in &group.vars {
            if let Some(first) = owner.insert(var_name, &group.name) {
                fail!(
                    "var {var_name:?} is in parameter groups {first:?} and {:?}",
                    group.name
                );
            }
        }
    }
    Ok(())
}

fn check_non_negative(what: &str, value: f64) -> candle::Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        fail!("{what} is {value}, expected a finite value >= 0");
    }
    Ok(())
}

/// Collects state tensors, recording missing and mis-shaped keys.
struct StateReader<'a> {
    state: &'a HashMap<String, Tensor>,
    missing: Vec<String>,
    misshaped: Vec<String>,
}

impl<'a> StateReader<'a> {
    fn new(state: &'a HashMap<String, Tensor>) -> Self {
        Self {
            state,
            missing: Vec::new(),
            misshaped: Vec::new(),
        }
    }

    /// The tensor under `key` moved to `device` and cast to `dtype`, if it has `shape`.
    fn tensor(
        &mut self,
        key: &str,
        shape: &Shape,
        dtype: DType,
        device: &Device,
    ) -> candle::Result<Option<Tensor>> {
        match self.state.get(key) {
            None => {
                self.missing.push(key.to_string());
                Ok(None)
            }
            Some(t) if t.shape() != shape => {
                self.misshaped
                    .push(format!("{key} (expected {shape:?}, found {:?})", t.shape()));
                Ok(None)
            }
            Some(t) => Ok(Some(t.to_device(device)?.to_dtype(dtype)?.detach())),
        }
    }

    /// A step count stored as a scalar tensor of any dtype.
    fn count(&mut self, key: &str) -> candle::Result<Option<u64>> {
        let Some(t) = self.tensor(key, &Shape::from(()), DType::F64, &Device::Cpu)? else {
            return Ok(None);
        };
        let value = t.to_scalar::<f64>()?;
        if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0) {
            fail!("optimizer state {key:?} is {value}, expected a whole number >= 0");
        }
        Ok(Some(value as u64))
    }

    fn finish(self) -> candle::Result<()> {
        if self.missing.is_empty() && self.misshaped.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", self.missing.join(", ")));
        }
        if !self.misshaped.is_empty() {
            parts.push(format!("mis-shaped keys: {}", self.misshaped.join(", ")));
        }
        fail!("cannot load optimizer state: {}", parts.join("; "))
    }
}

fn count_tensor(n: u64) -> candle::Result<Tensor> {
    Tensor::new(n as i64, &Device::Cpu)
}

/// Settings of [`Sgd`], named as in `torch.optim.SGD` (dampening is always 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Momentum factor `mu`; 0 turns momentum off.
    pub momentum: f64,
    /// Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
    /// L2 penalty added to the gradient: `g += weight_decay * p`.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// Stochastic gradient descent as `torch.optim.SGD` (dampening 0):
///
/// `g = grad + wd * p; b = mu * b + g (b = g at the first step);
/// g = nesterov ? g + mu * b : b; p = p - lr * g`.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    groups: Vec<ParamGroup>,
    /// Momentum buffers per group per var; empty when momentum is 0.
    buffers: Vec<Vec<Tensor>>,
    steps: u64,
}

impl Sgd {
    /// An SGD optimiser over `groups`. Errors on negative or non-finite
    /// settings, Nesterov without momentum, duplicate group names and a var in
    /// two groups.
    pub fn new(groups: Vec<ParamGroup>, config: SgdConfig) -> candle::Result<Self> {
        check_groups(&groups)?;
        check_non_negative("SGD lr", config.lr)?;
        check_non_negative("SGD weight_decay", config.weight_decay)?;
        if !(0.0..1.0).contains(&config.momentum) {
            fail!(
                "SGD momentum is {}, expected 0 <= momentum < 1",
                config.momentum
            );
        }
        if config.nesterov && config.momentum == 0.0 {
            fail!("SGD with Nesterov momentum needs momentum > 0");
        }
        let buffers = if config.momentum > 0.0 {
            zeros_like_groups(&groups)?
        } else {
            groups.iter().map(|_| Vec::new()).collect()
        };
        Ok(Self {
            config,
            groups,
            buffers,
            steps: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
}

fn zeros_like_groups(groups: &[ParamGroup]) -> candle::Result<Vec<Vec<Tensor>>> {
    groups
        .iter()
        .map(|g| g.vars.iter().map(|(_, v)| v.zeros_like()).collect())
        .collect()
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        let SgdConfig {
            lr,
            momentum,
            nesterov,
            weight_decay,
        } = self.config;
        for (group_idx, group) in self.groups.iter().enumerate() {
            let group_lr = lr * group.lr_scale;
            for (var_idx, (_, var)) in group.vars.iter().enumerate() {
                let Some(grad) = grads.get(var) else { continue };
                let param = var.as_tensor().detach();
                let mut grad = grad.detach();
                if weight_decay != 0.0 {
                    grad = (grad + (&param * weight_decay)?)?;
                }
                if momentum != 0.0 {
                    // Zero-initialised buffer: mu * 0 + g = g at the first step, as torch.
                    let buffer = ((&self.buffers[group_idx][var_idx] * momentum)? + &grad)?;
                    grad = if nesterov {
                        (grad + (&buffer * momentum)?)?
                    } else {
                        buffer.clone()
                    };
                    self.buffers[group_idx][var_idx] = buffer;
                }
                var.set(&(param - (grad * group_lr)?)?)?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> candle::Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        state.insert("step".to_string(), count_tensor(self.steps)?);
        for (group, buffers) in self.groups.iter().zip(&self.buffers) {
            for ((var_name, _), buffer) in group.vars.iter().zip(buffers) {
                state.insert(format!("{}.{var_name}.buf", group.name), buffer.clone());
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle::Result<()> {
        let mut reader = StateReader::new(state);
        let steps = reader.count("step")?;
        let mut buffers = Vec::new();
        for group in &self.groups {
            let mut group_buffers = Vec::new();
            if self.config.momentum > 0.0 {
                for (var_name, var) in &group.vars {
                    let key = format!("{}.{var_name}.buf", group.name);
                    let t = reader.tensor(&key, var.shape(), var.dtype(), var.device())?;
                    group_buffers.extend(t);
                }
            }
            buffers.push(group_buffers);
        }
        reader.finish()?;
        self.steps = steps.unwrap_or_default();
        self.buffers = buffers;
        Ok(())
    }
}

/// Settings of [`Adam`], named as in `torch.optim.Adam` / `AdamW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Weight decay: L2 on the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// `true`: AdamW, `p -= lr * weight_decay * p` before the Adam update.
    pub decoupled: bool,
}

impl AdamConfig {
    /// `torch.optim.Adam(lr=lr)`: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// `torch.optim.AdamW(lr=lr, weight_decay=weight_decay)` with the other
    /// settings at torch's defaults.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            weight_decay,
            decoupled: true,
            ..Self::adam(lr)
        }
    }
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self::adam(1e-3)
    }
}

/// Adam (and AdamW with `decoupled`) as in torch, with one step count per var:
///
/// `t += 1; m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g;
/// p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
#[derive(Debug)]
pub struct Adam {
    config: AdamConfig,
    groups: Vec<ParamGroup>,
    /// First moments per group per var.
    m: Vec<Vec<Tensor>>,
    /// Second moments per group per var.
    v: Vec<Vec<Tensor>>,
    /// Steps taken by each var (a var without a gradient does not count a step).
    var_steps: Vec<Vec<u64>>,
    steps: u64,
}

impl Adam {
    /// An Adam / AdamW optimiser over `groups`. Errors on negative or
    /// non-finite settings, betas outside [0, 1), duplicate group names and a
    /// var in two groups.
    pub fn new(groups: Vec<ParamGroup>, config: AdamConfig) -> candle::Result<Self> {
        check_groups(&groups)?;
        check_non_negative("Adam lr", config.lr)?;
        check_non_negative("Adam eps", config.eps)?;
        check_non_negative("Adam weight_decay", config.weight_decay)?;
        for (what, beta) in [("beta1", config.beta1), ("beta2", config.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                fail!("Adam {what} is {beta}, expected 0 <= {what} < 1");
            }
        }
        let m = zeros_like_groups(&groups)?;
        let v = zeros_like_groups(&groups)?;
        let var_steps = groups.iter().map(|g| vec![0; g.vars.len()]).collect();
        Ok(Self {
            config,
            groups,
            m,
            v,
            var_steps,
            steps: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
}

impl Adam {
    /// The scalars of step `t` of a var in a group of learning rate `group_lr`.
    fn step_scalars(&self, group_lr: f64, t: u64) -> AdamStep {
        let AdamConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            ..
        } = self.config;
        AdamStep {
            beta1,
            beta2,
            eps,
            step_size: group_lr / (1.0 - beta1.powf(t as f64)),
            bias_correction2_sqrt: (1.0 - beta2.powf(t as f64)).sqrt(),
            coupled_decay: if decoupled { 0.0 } else { weight_decay },
            param_scale: if decoupled {
                1.0 - group_lr * weight_decay
            } else {
                1.0
            },
        }
    }
}

/// One Adam step of `var` with candle's ops (the CUDA path, and the reference the fast
/// in-place kernel is tested against): gives the new moments.
fn adam_step_with_candle_ops(
    var: &Var,
    grad: &Tensor,
    (m, v): (&Tensor, &Tensor),
    s: &AdamStep,
) -> candle::Result<(Tensor, Tensor)> {
    let mut param = var.as_tensor().detach();
    let mut grad = grad.detach();
    if s.param_scale != 1.0 {
        param = (param * s.param_scale)?;
    }
    if s.coupled_decay != 0.0 {
        grad = (grad + (&param * s.coupled_decay)?)?;
    }
    // torch: exp_avg.lerp_(grad, 1 - beta1) = m + (1 - beta1) * (g - m).
    let m = (m + ((&grad - m)? * (1.0 - s.beta1))?)?;
    // torch: exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2).
    let v = ((v * s.beta2)? + (grad.sqr()? * (1.0 - s.beta2))?)?;
    let denom = ((v.sqrt()? / s.bias_correction2_sqrt)? + s.eps)?;
    let update = ((&m / &denom)? * s.step_size)?;
    var.set(&(param - update)?)?;
    Ok((m, v))
}

impl Optimizer for Adam {
    /// On the CPU in f32/f64, each var is updated by `common::kernels::adam_step` (three
    /// in-place passes); elsewhere by candle's ops. Both compute the same update.
    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        for (group_idx, group) in self.groups.iter().enumerate() {
            let group_lr = self.config.lr * group.lr_scale;
            for (var_idx, (_, var)) in group.vars.iter().enumerate() {
                let Some(grad) = grads.get(var) else { continue };
                let t = self.var_steps[group_idx][var_idx] + 1;
                let scalars = self.step_scalars(group_lr, t);
                let (m, v) = (&self.m[group_idx][var_idx], &self.v[group_idx][var_idx]);
                if !kernels::adam_step(var.as_tensor(), grad, m, v, &scalars)? {
                    let (m, v) = adam_step_with_candle_ops(var, grad, (m, v), &scalars)?;
                    self.m[group_idx][var_idx] = m;
                    self.v[group_idx][var_idx] = v;
                }
                self.var_steps[group_idx][var_idx] = t;
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> candle::Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        state.insert("step".to_string(), count_tensor(self.steps)?);
        for (group_idx, group) in self.groups.iter().enumerate() {
            for (var_idx, (var_name, _)) in group.vars.iter().enumerate() {
                let key = format!("{}.{var_name}", group.name);
                // Copies: the fast path updates the moments in place.
                state.insert(format!("{key}.m"), self.m[group_idx][var_idx].copy()?);
                state.insert(format!("{key}.v"), self.v[group_idx][var_idx].copy()?);
                let t = self.var_steps[group_idx][var_idx];
                state.insert(format!("{key}.step"), count_tensor(t)?);
            }
        }
        Ok(state)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle::Result<()> {
        let mut reader = StateReader::new(state);
        let steps = reader.count("step")?;
        let (mut m, mut v, mut var_steps) = (Vec::new(), Vec::new(), Vec::new());
        for group in &self.groups {
            let (mut group_m, mut group_v, mut group_steps) = (Vec::new(), Vec::new(), Vec::new());
            for (var_name, var) in &group.vars {
                let key = format!("{}.{var_name}", group.name);
                let (shape, dtype, device) = (var.shape(), var.dtype(), var.device());
                group_m.extend(reader.tensor(&format!("{key}.m"), shape, dtype, device)?);
                group_v.extend(reader.tensor(&format!("{key}.v"), shape, dtype, device)?);
                group_steps.extend(reader.count(&format!("{key}.step"))?);
            }
            m.push(group_m);
            v.push(group_v);
            var_steps.push(group_steps);
        }
        reader.finish()?;
        self.steps = steps.unwrap_or_default();
        // Own copies: the fast path updates the moments in place.
        let own = |groups: Vec<Vec<Tensor>>| -> candle::Result<Vec<Vec<Tensor>>> {
            groups
                .into_iter()
                .map(|g| g.iter().map(Tensor::copy).collect())
                .collect()
        };
        self.m = own(m)?;
        self.v = own(v)?;
        self.var_steps = var_steps;
        Ok(())
    }
}
