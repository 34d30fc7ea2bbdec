//! One row: ggml's two candidates (reference and imatrix bytes), the
//! refined ones built from them (and from GPTQ), each measured exactly in
//! `H` (or on `X`), and the best kept.

use super::gram::{dot, Metric};
use super::model::{kind, Model};
use super::refine::State;
use super::Options;
use crate::quant::{format, QuantType};

/// What every row of a layer shares: the type, the metrics, the inputs,
/// GPTQ's factor, the importance matrix and the options.
pub(super) struct RowCtx<'a> {
    pub(super) ty: QuantType,
    pub(super) n: usize,
    /// The metric the refinement minimises (shrunk H).
    pub(super) metric: Metric<'a>,
    /// H itself, for the final choice ...
    pub(super) exact: Metric<'a>,
    /// ... or X (rows of samples, f64) when measuring on X is cheaper.
    pub(super) x: Option<&'a [f64]>,
    /// GPTQ's factor ([`super::gptq::gptq_factor`]), when that candidate is built.
    pub(super) factor: Option<&'a [f64]>,
    /// ggml's importance matrix for candidate 2 (and GPTQ's scales).
    pub(super) imatrix: &'a [f32],
    pub(super) opts: &'a Options,
    /// False when H is not finite: only ggml's candidates are used.
    pub(super) refine: bool,
}

impl RowCtx<'_> {
    /// Exact `eᵀHe` of row bytes (decoded by our ggml-identical dequantizer).
    fn error_of(&self, w: &[f32], bytes: &[u8], e: &mut [f64], g: &mut [f64]) -> f64 {
        let mut deq = vec![0f32; self.n];
        (format(self.ty).dequantize_row)(bytes, &mut deq);
        for i in 0..self.n {
            e[i] = w[i] as f64 - deq[i] as f64;
        }
        let f = match self.x {
            Some(x) => x
                .chunks_exact(self.n)
                .map(|xs| {
                    let y = dot(xs, e);
                    y * y
                })
                .sum(),
            None => {
                self.exact.apply(e, g);
                dot(e, g)
            }
        };
        if f.is_nan() {
            f64::INFINITY
        } else {
            f
        }
    }

    /// Whether [`Self::row`] searches beyond ggml's two candidates.
    pub(super) fn searches(&self) -> bool {
        self.refine && (self.ty == QuantType::Q4_0 || kind(self.ty).is_some())
    }

    /// Fill `dst` with the best candidate; returns 0 (reference), 1
    /// (imatrix) or 2 (refined).
    pub(super) fn row(&self, w: &[f32], rb: &[u8], ib: &[u8], dst: &mut [u8]) -> u8 {
        let n = self.n;
        if rb == ib && !self.searches() {
            // Nothing to choose between: ggml's two candidates are the same
            // bytes (e.g. a format whose quantizer ignores the importance
            // matrix, such as Q8_0) and no search would follow.
            dst.copy_from_slice(rb);
            return 0;
        }
        let mut e = vec![0f64; n];
        let mut g = vec![0f64; n];
        let f_ref = self.error_of(w, rb, &mut e, &mut g);
        let f_imat = self.error_of(w, ib, &mut e, &mut g);
        let (mut best, mut pick) = if f_imat < f_ref {
            dst.copy_from_slice(ib);
            (f_imat, 1)
        } else {
            dst.copy_from_slice(rb);
            (f_ref, 0)
        };
        if !self.refine || w.iter().any(|v| !v.is_finite()) {
            return pick;
        }
        if self.ty == QuantType::Q4_0 {
            // The weighted scale search, on the metric's diagonal.
            let d: Vec<f64> = (0..n).map(|i| self.metric.hii(i)).collect();
            let mut tmp = vec![0u8; dst.len()];
            super::legacy::q4_0_row(w, &d, &mut tmp);
            let f = self.error_of(w, &tmp, &mut e, &mut g);
            if f < best {
                pick = 2;
                dst.copy_from_slice(&tmp);
            }
            return pick;
        }
        let Some(kind) = kind(self.ty) else {
            return pick;
        };
        let mut starts = Vec::with_capacity(3);
        if self.opts.refine_reference {
            starts.push(Model::decode(kind, rb, n));
        }
        starts.push(Model::decode(kind, ib, n));
        if let Some(u) = self.factor {
            starts.push(self.gptq(kind, w, u));
        }
        let mut tmp = vec![0u8; dst.len()];
        for m in starts {
            let mut st = State::new(self.metric, w, m);
            st.optimize(self.opts.max_rounds);
            st.model.encode(&mut tmp);
            let f = self.error_of(w, &tmp, &mut e, &mut g);
            if f < best {
                best = f;
                pick = 2;
                dst.copy_from_slice(&tmp);
            }
        }
        pick
    }
}
