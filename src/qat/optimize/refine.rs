//! The refinement of one row's model ([`State`]): rounds of exact
//! coordinate descent on the codes, the least-squares re-fit of each
//! super-block's scales (`refit`), and a global rescan of each sub-block's
//! integer scale and min, every accepted move lowering the search metric.

use super::gram::{dot, Metric};
use super::model::{round, Model, Scales};
use crate::quant::kquants::{fp16_to_fp32, QK_K};

/// A row being refined: the model, its values, `g = H(w − ŵ)` and `f = eᵀHe`.
pub(super) struct State<'a> {
    pub(super) metric: Metric<'a>,
    pub(super) w: &'a [f32],
    pub(super) model: Model,
    pub(super) val: Vec<f32>,
    pub(super) g: Vec<f64>,
    pub(super) f: f64,
}

impl<'a> State<'a> {
    pub(super) fn new(metric: Metric<'a>, w: &'a [f32], model: Model) -> State<'a> {
        let n = w.len();
        let val: Vec<f32> = (0..n).map(|i| model.value(i)).collect();
        let mut st = State {
            metric,
            w,
            model,
            val,
            g: vec![0f64; n],
            f: 0.0,
        };
        st.refresh();
        st
    }

    /// Recompute `g` and `f` from scratch (removes accumulated drift).
    fn refresh(&mut self) {
        let e: Vec<f64> = self
            .w
            .iter()
            .zip(&self.val)
            .map(|(&a, &b)| a as f64 - b as f64)
            .collect();
        self.metric.apply(&e, &mut self.g);
        self.f = dot(&e, &self.g);
    }

    pub(super) fn optimize(&mut self, rounds: usize) {
        if !self.f.is_finite() {
            return;
        }
        let nsb = self.w.len() / QK_K;
        for _ in 0..rounds {
            let before = self.f;
            self.code_sweeps(6);
            for sb in 0..nsb {
                self.refit_scales(sb);
            }
            for j in 0..self.w.len() / self.model.kind.group {
                self.rescan_group(j);
            }
            self.code_sweeps(6);
            self.refresh();
            let gain = before - self.f;
            if gain.is_nan() || gain <= 1e-7 * before.abs() {
                break;
            }
        }
    }

    /// Global search over the integer scale (and min) of sub-block `j`, the
    /// super-block's fp16 scales fixed: every scale level, the min fitted by
    /// least squares and rounded (±1), codes re-chosen, scored by the
    /// separable model `Σ H_ii (t_i − ŵ_i)²` around the targets
    /// `t = ŵ + g / diag(H)` (exact for a diagonal metric). The best is
    /// applied when the exact error drops.
    fn rescan_group(&mut self, j: usize) {
        let kind = self.model.kind;
        let i0 = j * kind.group;
        let sb = i0 / QK_K;
        let ds = fp16_to_fp32(self.model.d[sb]);
        let ms = fp16_to_fp32(self.model.dmin[sb]);
        if ds == 0.0 || !ds.is_finite() || !ms.is_finite() {
            return;
        }
        let targets = self.group_targets(i0);
        let Some((ls, lm)) = self.best_group_scales(j, &targets, ds, ms) else {
            return;
        };
        if ls == self.model.ls[j] && lm == self.model.lm[j] {
            return;
        }
        self.try_group_scales(j, ls, lm, &targets.t);
    }

    /// The targets of sub-block `i0..i0 + group` for the separable proxy of
    /// [`Self::rescan_group`].
    fn group_targets(&self, i0: usize) -> GroupTargets {
        let kind = self.model.kind;
        let mut tg = GroupTargets {
            t: [0f64; 32],
            h: [0f64; 32],
            base: 0.0,
            group: kind.group,
            lev0: kind.lev0 as f64,
            top: (kind.nlev - 1) as f64,
        };
        for k in 0..kind.group {
            let hi_ = self.metric.hii(i0 + k);
            tg.h[k] = if hi_ > 0.0 { hi_ } else { 0.0 };
            tg.t[k] = if tg.h[k] > 0.0 {
                self.val[i0 + k] as f64 + self.g[i0 + k] / tg.h[k]
            } else {
                self.val[i0 + k] as f64
            };
            let r = tg.t[k] - self.val[i0 + k] as f64;
            tg.base += tg.h[k] * r * r;
        }
        tg
    }

    /// The integer scale and min of sub-block `j` with the lowest proxy error
    /// (the current ones unless another is lower); `None` when the targets
    /// carry no weight.
    fn best_group_scales(
        &self,
        j: usize,
        tg: &GroupTargets,
        ds: f32,
        ms: f32,
    ) -> Option<(i32, i32)> {
        let kind = self.model.kind;
        let group = kind.group;
        let with_min = matches!(kind.scales, Scales::WithMin { .. });
        let (lo, hi) = match kind.scales {
            Scales::WithMin { smax } => (0, smax),
            Scales::Signed { lo, hi } => (lo, hi),
        };
        let (t, h, lev0, top) = (&tg.t, &tg.h, tg.lev0, tg.top);
        let cur_ls = self.model.ls[j];
        let cur_lm = self.model.lm[j];
        let mut best = (tg.base, cur_ls, cur_lm);
        let sum_h: f64 = h[..group].iter().sum();
        if sum_h.is_nan() || sum_h <= 0.0 {
            return None;
        }
        for ls in lo..=hi {
            let a = ds * ls as f32;
            if a == 0.0 {
                continue;
            }
            if !with_min || ms == 0.0 {
                let e = tg.score(a, 0.0);
                if e < best.0 {
                    best = (e, ls, if with_min { cur_lm } else { 0 });
                }
                continue;
            }
            // Min by least squares for codes rounded with the current min.
            let b0 = ms * cur_lm as f32;
            let mut num = 0.0;
            for k in 0..group {
                let u = round((t[k] + b0 as f64) / a as f64 - lev0).clamp(0.0, top);
                num += h[k] * (a as f64 * (u + lev0) - t[k]);
            }
            let lm0 = round(num / sum_h / ms as f64);
            let lm0 = if lm0.is_finite() { lm0 as i32 } else { cur_lm };
            // lm0 saturates at i32::MIN/MAX for extreme inputs
            for lm in [lm0.saturating_sub(1), lm0, lm0.saturating_add(1), cur_lm] {
                if lm < 0 || lm > hi {
                    continue;
                }
                let e = tg.score(a, ms * lm as f32);
                if e < best.0 {
                    best = (e, ls, lm);
                }
            }
        }
        Some((best.1, best.2))
    }

    /// Sets sub-block `j`'s scale and min to `ls`, `lm`, its codes nearest to
    /// the targets `t`; kept when the exact error drops, undone otherwise.
    fn try_group_scales(&mut self, j: usize, ls: i32, lm: i32, t: &[f64; 32]) {
        let group = self.model.kind.group;
        let i0 = j * group;
        let (cur_ls, cur_lm) = (self.model.ls[j], self.model.lm[j]);
        let old_codes: Vec<u8> = self.model.codes[i0..i0 + group].to_vec();
        self.model.ls[j] = ls;
        self.model.lm[j] = lm;
        let (a, b) = (self.model.a(j), self.model.b(j));
        let mut dv = [0f64; 32];
        for k in 0..group {
            if let Some(c) = self.model.nearest_code(t[k], a, b) {
                self.model.codes[i0 + k] = c;
            }
            dv[k] = self.model.value(i0 + k) as f64 - self.val[i0 + k] as f64;
        }
        let dv = &dv[..group];
        let df = -2.0 * dot(dv, &self.g[i0..i0 + group]) + self.metric.quad_local(i0, dv);
        if df < 0.0 {
            for k in 0..group {
                self.val[i0 + k] = self.model.value(i0 + k);
            }
            self.metric.sub_update(&mut self.g, i0, dv);
            self.f += df;
        } else {
            self.model.ls[j] = cur_ls;
            self.model.lm[j] = cur_lm;
            self.model.codes[i0..i0 + group].copy_from_slice(&old_codes);
        }
    }

    /// Exact coordinate descent over the codes: for each element, the code
    /// nearest to the unconstrained optimum `ŵ_i + g_i / H_ii`.
    fn code_sweeps(&mut self, max: usize) {
        let n = self.w.len();
        let group = self.model.kind.group;
        for _ in 0..max {
            let mut changed = 0usize;
            for j in 0..n / group {
                let (a, b) = (self.model.a(j), self.model.b(j));
                if a == 0.0 {
                    continue;
                }
                for i in j * group..(j + 1) * group {
                    let hii = self.metric.hii(i);
                    if hii.is_nan() || hii <= 0.0 {
                        continue;
                    }
                    let cur = self.val[i];
                    let t = cur as f64 + self.g[i] / hii;
                    let Some(c) = self.model.nearest_code(t, a, b) else {
                        continue;
                    };
                    if c == self.model.codes[i] {
                        continue;
                    }
                    let nv = a * self.model.lev(c) - b;
                    let d = nv as f64 - cur as f64;
                    let df = -2.0 * d * self.g[i] + d * d * hii;
                    if df < 0.0 {
                        self.model.codes[i] = c;
                        self.val[i] = nv;
                        self.metric.sub_update(&mut self.g, i, &[d]);
                        self.f += df;
                        changed += 1;
                    }
                }
            }
            if changed == 0 {
                break;
            }
        }
    }
}

/// One sub-block's targets `t = ŵ + g / H_ii` and weights `h = max(H_ii, 0)`
/// for [`State::rescan_group`], with the proxy error of the current values.
struct GroupTargets {
    t: [f64; 32],
    h: [f64; 32],
    /// `Σ h (t − ŵ)²` of the current values.
    base: f64,
    group: usize,
    lev0: f64,
    /// The highest code.
    top: f64,
}

impl GroupTargets {
    /// Proxy error of (a, b) with codes chosen by rounding.
    fn score(&self, a: f32, b: f32) -> f64 {
        let mut e = 0.0;
        for k in 0..self.group {
            let u = round((self.t[k] + b as f64) / a as f64 - self.lev0).clamp(0.0, self.top);
            let v = a * (u + self.lev0) as f32 - b;
            let r = self.t[k] - v as f64;
            e += self.h[k] * r * r;
        }
        e
    }
}
