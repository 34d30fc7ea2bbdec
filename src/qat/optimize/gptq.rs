//! The GPTQ-style candidate: the upper Cholesky factor of `(H + λI)⁻¹`
//! ([`gptq_factor`], once per layer), and the pass over a row
//! ([`RowCtx::gptq`]) that takes each super-block's scales from ggml's
//! imatrix search on the error-compensated weights, then chooses the codes
//! in order, feeding each element's error forward through the factor.

use rayon::prelude::*;

use super::gram::dot;
use super::model::{Kind, Model};
use super::row::RowCtx;
use crate::quant::format;
use crate::quant::kquants::QK_K;

/// GPTQ's factor: the upper Cholesky factor `U` of `(H + λI)⁻¹`
/// (`UᵀU = (H + λI)⁻¹`), row-major. Computed as `J L⁻¹ J` where `L` is the
/// lower Cholesky factor of `J (H + λI) J` (`J` reverses the order). `None`
/// when `H` is zero or not positive definite after damping.
pub(super) fn gptq_factor(h: &[f64], n: usize, damp: f64) -> Option<Vec<f64>> {
    let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        return None;
    }
    let lam = damp.max(1e-6) * mean;
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            l[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
        l[i * n + i] += lam;
    }
    if !cholesky_lower(&mut l, n) {
        return None;
    }
    // L⁻¹ by strips of columns, in parallel; U = J L⁻¹ J.
    let strips: Vec<(usize, Vec<f64>)> = (0..n)
        .step_by(CHOL_BLOCK)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|k0| (k0, inverse_strip(&l, n, k0)))
        .collect();
    let mut u = vec![0f64; n * n];
    for (k0, strip) in strips {
        let kb = CHOL_BLOCK.min(n - k0);
        for (a, row) in strip.chunks_exact(kb).enumerate() {
            let i = k0 + a;
            for (c, &x) in row.iter().enumerate().take((a + 1).min(kb)) {
                // Li[i][j] → U[n-1-i][n-1-j].
                u[(n - 1 - i) * n + (n - 1 - (k0 + c))] = x;
            }
        }
    }
    Some(u)
}

/// Columns `k0..k0 + kb` of `L⁻¹` (`L` lower, `n × n`), rows `k0..n`, as
/// a row-major strip of `kb` columns: block row by block row, each the
/// product of the rows of `L` left of its diagonal block with the strip
/// above (dgemm), then solved against that diagonal block.
fn inverse_strip(l: &[f64], n: usize, k0: usize) -> Vec<f64> {
    let kb = CHOL_BLOCK.min(n - k0);
    let m = n - k0;
    let mut x = vec![0f64; m * kb];
    let mut p = vec![0f64; CHOL_BLOCK * kb];
    for r in (0..m).step_by(CHOL_BLOCK) {
        let bi = CHOL_BLOCK.min(m - r);
        let i0 = k0 + r;
        // P = L[i0.., k0..i0] · X[..r] (the diagonal block: P = −I).
        let p = &mut p[..bi * kb];
        if r == 0 {
            p.fill(0.0);
            for a in 0..bi.min(kb) {
                p[a * kb + a] = -1.0;
            }
        } else {
            // SAFETY: rows i0..i0+bi, columns k0..i0 of l (row stride n)
            // are bi × r; x's first r rows are r × kb (stride kb); p is
            // bi × kb; all in bounds.
            unsafe {
                matrixmultiply::dgemm(
                    bi,
                    r,
                    kb,
                    1.0,
                    l.as_ptr().add(i0 * n + k0),
                    n as isize,
                    1,
                    x.as_ptr(),
                    kb as isize,
                    1,
                    0.0,
                    p.as_mut_ptr(),
                    kb as isize,
                    1,
                );
            }
        }
        // X[r + a] = (−P[a] − Σ_{b<a} L[i0+a][i0+b] X[r + b]) / L[i0+a][i0+a].
        let rows = &mut x[r * kb..];
        for a in 0..bi {
            let (prev, cur) = rows.split_at_mut(a * kb);
            let cur = &mut cur[..kb];
            let li = &l[(i0 + a) * n + i0..(i0 + a) * n + i0 + a];
            for c in 0..kb {
                let mut v = -p[a * kb + c];
                for (b, &lb) in li.iter().enumerate() {
                    v -= lb * prev[b * kb + c];
                }
                cur[c] = v / l[(i0 + a) * n + i0 + a];
            }
        }
    }
    x
}

/// Columns per block of [`cholesky_lower`].
const CHOL_BLOCK: usize = 64;

/// The lower Cholesky factor of the symmetric `a` (`n × n`, row-major; its
/// lower triangle is read and overwritten, the upper one is left as
/// garbage), blocked: each diagonal block and the panel below it are
/// factored directly, then the trailing lower triangle is updated by one
/// matrix product per block of rows (dgemm, rows in parallel). False when
/// `a` is not positive definite.
pub(super) fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for k0 in (0..n).step_by(CHOL_BLOCK) {
        let kb = CHOL_BLOCK.min(n - k0);
        // The diagonal block.
        for i in k0..k0 + kb {
            for j in k0..=i {
                let s = a[i * n + j] - dot(&a[i * n + k0..i * n + j], &a[j * n + k0..j * n + j]);
                if j == i {
                    if s.is_nan() || s <= 0.0 {
                        return false;
                    }
                    a[i * n + i] = s.sqrt();
                } else {
                    a[i * n + j] = s / a[j * n + j];
                }
            }
        }
        let r0 = k0 + kb;
        if r0 == n {
            break;
        }
        // The panel below it: rows solved against the block, in parallel.
        let (top, below) = a.split_at_mut(r0 * n);
        let diag = &top[k0 * n..];
        below.par_chunks_mut(n).for_each(|row| {
            for j in 0..kb {
                let dj = &diag[j * n + k0..j * n + k0 + j];
                let s = row[k0 + j] - dot(&row[k0..k0 + j], dj);
                row[k0 + j] = s / diag[j * n + k0 + j];
            }
        });
        // The trailing lower triangle: A[r, r] −= P Pᵀ, P the panel.
        let m = n - r0;
        let mut p = vec![0f64; m * kb];
        for (pr, row) in p.chunks_exact_mut(kb).zip(below.chunks_exact(n)) {
            pr.copy_from_slice(&row[k0..k0 + kb]);
        }
        let p = &p;
        below
            .par_chunks_mut(CHOL_BLOCK * n)
            .enumerate()
            .for_each(|(ib, rows)| {
                let i0 = ib * CHOL_BLOCK;
                let bm = rows.len() / n;
                let cols = i0 + bm;
                // SAFETY: p is m × kb (row stride kb); its rows i0..i0+bm
                // and, transposed, its rows 0..cols are in bounds; `rows`
                // holds bm rows of n from column r0 on, cols ≤ n − r0.
                unsafe {
                    matrixmultiply::dgemm(
                        bm,
                        kb,
                        cols,
                        -1.0,
                        p.as_ptr().add(i0 * kb),
                        kb as isize,
                        1,
                        p.as_ptr(),
                        1,
                        kb as isize,
                        1.0,
                        rows.as_mut_ptr().add(r0),
                        n as isize,
                        1,
                    );
                }
            });
    }
    true
}

impl RowCtx<'_> {
    /// GPTQ with per-super-block scales from ggml's imatrix search on the
    /// error-compensated weights.
    pub(super) fn gptq(&self, kind: Kind, w: &[f32], u: &[f64]) -> Model {
        let n = self.n;
        let fmt = format(self.ty);
        let mut m = Model::new(kind, n);
        let mut wq: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let mut blk = vec![0u8; fmt.block_bytes];
        let mut xs = [0f32; QK_K];
        for sb in 0..n / QK_K {
            let s0 = sb * QK_K;
            for k in 0..QK_K {
                xs[k] = wq[s0 + k] as f32;
            }
            (fmt.quantize_row)(&xs, &mut blk, Some(&self.imatrix[s0..s0 + QK_K]));
            m.decode_block(sb, &blk);
            for i in s0..s0 + QK_K {
                let j = i / kind.group;
                let (a, b) = (m.a(j), m.b(j));
                if let Some(c) = m.nearest_code(wq[i], a, b) {
                    m.codes[i] = c;
                }
                let v = m.value(i) as f64;
                let row = &u[i * n..i * n + n];
                let err = (wq[i] - v) / row[i];
                if err != 0.0 && err.is_finite() {
                    for k in i + 1..n {
                        wq[k] -= err * row[k];
                    }
                }
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked factor reconstructs the matrix (L Lᵀ = A) for sizes
    /// around the block, and refuses a matrix that is not positive definite.
    #[test]
    fn blocked_cholesky_reconstructs() {
        for n in [1, 5, 64, 65, 200] {
            let mut s = 12345u64 + n as u64;
            let mut rnd = || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            };
            let k = n + 3;
            let x: Vec<f64> = (0..n * k).map(|_| rnd()).collect();
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = (0..k).map(|t| x[i * k + t] * x[j * k + t]).sum();
                }
            }
            let mut l = a.clone();
            assert!(cholesky_lower(&mut l, n), "n = {n}");
            let scale = a.iter().fold(0f64, |m, v| m.max(v.abs()));
            for i in 0..n {
                for j in 0..=i {
                    let v: f64 = (0..=j).map(|t| l[i * n + t] * l[j * n + t]).sum();
                    assert!(
                        (v - a[i * n + j]).abs() <= 1e-10 * scale,
                        "n = {n} [{i}][{j}]"
                    );
                }
            }
        }
        let mut bad = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut bad, 2));
    }
}
