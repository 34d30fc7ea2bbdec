//! The column weights of a tensor, shared by the writer and the planner:
//! its importance-matrix entry (one row of `ne[0]` per expert), and under
//! `--optimize --norm-importance` the data-free importance of the RMS norm
//! that scales its inputs.

use super::gguf::TensorInfo;
use super::imatrix::Imatrix;
use super::roles::{self, Category};
use super::source::{Source, TensorRef};
use super::ModelError;
use crate::quant::QuantType;

/// Column weights of one tensor.
pub struct ColumnWeights<'a> {
    /// The imatrix entry: `ne[0]` values per expert.
    imatrix: Option<&'a [f32]>,
    /// The norm's importance, repeated per expert.
    norm: Option<Vec<f32>>,
    row_len: usize,
    /// Rows of one expert (`ne[1]`).
    rows_per_expert: usize,
}

impl<'a> ColumnWeights<'a> {
    /// The weights of `r`: its imatrix entry when `imatrix` has one (an
    /// entry of the wrong size is an error, except for token_embd, which
    /// llama.cpp then quantizes without), and the norm's importance when
    /// `norm` asks for it and there is no imatrix entry.
    pub fn load(
        src: &Source,
        r: TensorRef,
        imatrix: Option<&'a Imatrix>,
        norm: bool,
    ) -> Result<ColumnWeights<'a>, ModelError> {
        let t = src.info(r);
        let row_len = t.ne[0] as usize;
        let im = match imatrix {
            Some(m) => imatrix_entry(m, t)?,
            None => None,
        };
        // (An empty tensor needs no weights: `ne[2]` may then be anything.)
        let norm = if im.is_none() && norm && t.nelements() > 0 {
            norm_importance(src, r)?
        } else {
            None
        };
        Ok(ColumnWeights {
            imatrix: im,
            norm,
            row_len,
            rows_per_expert: (t.ne[1] as usize).max(1),
        })
    }

    /// Whether any weights are there (chunks then stay inside one expert).
    pub fn any(&self) -> bool {
        self.imatrix.is_some() || self.norm.is_some()
    }

    /// Rows from `row` to the end of its expert.
    pub fn rows_left_in_expert(&self, row: usize) -> usize {
        self.rows_per_expert - row % self.rows_per_expert
    }

    fn slice<'b>(&self, v: &'b [f32], row: usize) -> &'b [f32] {
        let s = row / self.rows_per_expert * self.row_len;
        &v[s..s + self.row_len]
    }

    /// The imatrix row for the expert of `row` (ggml's quantizer takes it).
    pub fn imatrix_row(&self, row: usize) -> Option<&[f32]> {
        self.imatrix.map(|v| self.slice(v, row))
    }

    /// The search's weights for the expert of `row`: the imatrix, else the
    /// norm's importance.
    pub fn search_row(&self, row: usize) -> Option<&[f32]> {
        self.imatrix_row(row)
            .or_else(|| self.norm.as_deref().map(|v| self.slice(v, row)))
    }

    /// What the search's weights are: "imatrix", "norm" or "none".
    pub fn kind(&self) -> &'static str {
        if self.imatrix.is_some() {
            "imatrix"
        } else if self.norm.is_some() {
            "norm"
        } else {
            "none"
        }
    }
}

/// Data-free column importance of `r`: the square of the norm weight that
/// scales its inputs (floored at 1e-3 of its mean), repeated per expert;
/// `None` when the model has no such 1-D float tensor of the right width.
fn norm_importance(src: &Source, r: TensorRef) -> Result<Option<Vec<f32>>, ModelError> {
    let t = src.info(r);
    let Some(nr) = roles::norm_name(&t.name).and_then(|n| src.find_near(r, &n)) else {
        return Ok(None);
    };
    let nt = src.info(nr);
    let float = matches!(
        QuantType::from_ggml(nt.ty),
        Some(QuantType::F32 | QuantType::F16 | QuantType::BF16)
    );
    if nt.ne[0] != t.ne[0] || nt.nrows() != 1 || !float {
        return Ok(None);
    }
    let n = t.ne[0] as usize;
    let mut v = vec![0f32; n];
    src.rows_f32(nr, 0, &mut Vec::new(), &mut v)?;
    let mut d: Vec<f32> = v.iter().map(|x| x * x).collect();
    let mean = d.iter().map(|&x| x as f64).sum::<f64>() / n.max(1) as f64;
    if !mean.is_finite() || mean <= 0.0 {
        return Ok(None);
    }
    let floor = (1e-3 * mean) as f32;
    for x in &mut d {
        *x = x.max(floor);
    }
    Ok(Some(d.repeat((t.ne[2] as usize).max(1))))
}

/// The imatrix entry of `t`: `None` when there is none, or when a
/// token_embd entry has another size (llama.cpp then quantizes without);
/// an error when another tensor's entry is not `ne[0]` × experts.
fn imatrix_entry<'a>(im: &'a Imatrix, t: &TensorInfo) -> Result<Option<&'a [f32]>, ModelError> {
    let Some(v) = im.get(&t.name) else {
        return Ok(None);
    };
    if Some(v.len() as u64) == t.ne[0].checked_mul(t.ne[2]) {
        return Ok(Some(v));
    }
    if roles::category(&t.name) == Category::TokenEmbd {
        return Ok(None);
    }
    Err(ModelError::Imatrix(format!(
        "entry '{}' has {} weights, the tensor needs {} (ne[0] * experts): an imatrix of another model?",
        t.name,
        v.len(),
        t.ne[0].saturating_mul(t.ne[2])
    )))
}

/// The imatrix must belong to this model: some names in common and every
/// common name of the right size (token_embd excepted, as in llama.cpp).
pub fn check_imatrix(im: &Imatrix, src: &Source) -> Result<(), ModelError> {
    let mut common = 0;
    for (_, t) in src.tensors() {
        common += usize::from(im.get(&t.name).is_some());
        imatrix_entry(im, t)?;
    }
    if common == 0 {
        return Err(ModelError::Imatrix(format!(
            "none of its {} entries names a tensor of this model: an imatrix of another model?",
            im.len()
        )));
    }
    Ok(())
}
