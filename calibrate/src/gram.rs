//! The Gram matrix XᵀX of a block of activations, added into a packed upper
//! triangle of f64 sums: a syrk without BLAS. The block (n rows of d
//! columns) is transposed once so every entry is a dot product of two
//! contiguous columns; entries are computed four at a time in f32 (exact
//! enough over one chunk of at most a few thousand rows) and added to the
//! f64 totals, which keep the error of long runs from growing. Rows of the
//! triangle are split over threads in blocks of equal work.

/// Index of entry (i, j), i <= j, in a packed upper triangle of order d
/// (row r holds its d - r entries from the diagonal on).
pub fn packed_index(d: usize, i: usize, j: usize) -> usize {
    i * d - (i * i - i) / 2 + (j - i)
}

/// Length of a packed upper triangle of order d.
pub fn packed_len(d: usize) -> usize {
    d * (d + 1) / 2
}

/// Adds XᵀX into `acc` (packed upper triangle, order d), X being `n` rows of
/// `d` floats in `x`, using up to `threads` threads. `xt` is scratch.
pub fn accumulate(
    acc: &mut [f64],
    x: &[f32],
    n: usize,
    d: usize,
    threads: usize,
    xt: &mut Vec<f32>,
) {
    assert_eq!(acc.len(), packed_len(d));
    assert_eq!(x.len(), n * d);
    transpose(x, n, d, xt);
    let xt = &xt[..];
    let bounds = split_rows(d, threads.max(1));
    let mut rest = acc;
    let mut parts = Vec::new();
    for w in bounds.windows(2) {
        let len: usize = (w[0]..w[1]).map(|i| d - i).sum();
        let (head, tail) = rest.split_at_mut(len);
        parts.push((w[0], w[1], head));
        rest = tail;
    }
    if parts.len() == 1 {
        let (lo, hi, part) = parts.pop().unwrap();
        rows(part, xt, n, d, lo, hi);
        return;
    }
    std::thread::scope(|s| {
        for (lo, hi, part) in parts {
            s.spawn(move || rows(part, xt, n, d, lo, hi));
        }
    });
}

/// Column-major copy of the row-major block: column c is xt[c*n..(c+1)*n].
fn transpose(x: &[f32], n: usize, d: usize, xt: &mut Vec<f32>) {
    xt.clear();
    xt.resize(n * d, 0.0);
    const B: usize = 32;
    for r0 in (0..n).step_by(B) {
        for c0 in (0..d).step_by(B) {
            for r in r0..(r0 + B).min(n) {
                for c in c0..(c0 + B).min(d) {
                    xt[c * n + r] = x[r * d + c];
                }
            }
        }
    }
}

/// Row boundaries giving each of `parts` threads about the same number of
/// triangle entries.
fn split_rows(d: usize, parts: usize) -> Vec<usize> {
    let total = packed_len(d);
    let mut bounds = vec![0];
    let mut done = 0;
    for i in 0..d {
        done += d - i;
        let k = bounds.len();
        if k < parts && done * parts >= total * k {
            bounds.push(i + 1);
        }
    }
    if *bounds.last().unwrap() != d {
        bounds.push(d);
    }
    bounds
}

/// Rows lo..hi of the triangle; `part` starts at row lo.
fn rows(part: &mut [f64], xt: &[f32], n: usize, d: usize, lo: usize, hi: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected just above.
        unsafe { rows_fma(part, xt, n, d, lo, hi) };
        return;
    }
    rows_impl::<false>(part, xt, n, d, lo, hi);
}

/// AVX2/FMA rows: eight dot products at a time (eight independent FMA
/// chains, nine loads per eight FMAs), eight lanes each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_fma(part: &mut [f64], xt: &[f32], n: usize, d: usize, lo: usize, hi: usize) {
    use std::arch::x86_64::*;
    assert!(xt.len() >= n * d);
    let n8 = n / 8 * 8;
    let p = xt.as_ptr();
    let mut off = 0;
    for i in lo..hi {
        let out = &mut part[off..off + (d - i)];
        let a = p.add(i * n);
        let mut j = i;
        while j + 8 <= d {
            let mut s = [_mm256_setzero_ps(); 8];
            let mut t = 0;
            while t < n8 {
                let av = _mm256_loadu_ps(a.add(t));
                for (k, acc) in s.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(av, _mm256_loadu_ps(p.add((j + k) * n + t)), *acc);
                }
                t += 8;
            }
            for (k, acc) in s.iter().enumerate() {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
                let b = &xt[(j + k) * n..(j + k + 1) * n];
                let tail: f32 = (n8..n).map(|t| *a.add(t) * b[t]).sum();
                out[j - i + k] += f64::from(lanes.iter().sum::<f32>() + tail);
            }
            j += 8;
        }
        let col = |c: usize| &xt[c * n..(c + 1) * n];
        for j in j..d {
            out[j - i] += f64::from(dot4::<true>(col(i), [col(j); 4])[0]);
        }
        off += d - i;
    }
}

#[inline(always)]
fn rows_impl<const FMA: bool>(
    part: &mut [f64],
    xt: &[f32],
    n: usize,
    d: usize,
    lo: usize,
    hi: usize,
) {
    let col = |c: usize| &xt[c * n..(c + 1) * n];
    let mut off = 0;
    for i in lo..hi {
        let a = col(i);
        let out = &mut part[off..off + (d - i)];
        let mut j = i;
        while j + 4 <= d {
            let s = dot4::<FMA>(a, [col(j), col(j + 1), col(j + 2), col(j + 3)]);
            for k in 0..4 {
                out[j - i + k] += f64::from(s[k]);
            }
            j += 4;
        }
        for j in j..d {
            out[j - i] += f64::from(dot4::<FMA>(a, [col(j); 4])[0]);
        }
        off += d - i;
    }
}

/// Four dot products of `a` with `b[k]`, eight lanes each.
#[inline(always)]
fn dot4<const FMA: bool>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [[0f32; 8]; 4];
    let n8 = a.len() / 8 * 8;
    let (a8, at) = a.split_at(n8);
    for (c, av) in a8.chunks_exact(8).enumerate() {
        for k in 0..4 {
            let bv = &b[k][c * 8..c * 8 + 8];
            for l in 0..8 {
                acc[k][l] = if FMA {
                    av[l].mul_add(bv[l], acc[k][l])
                } else {
                    acc[k][l] + av[l] * bv[l]
                };
            }
        }
    }
    let mut out = [0f32; 4];
    for k in 0..4 {
        let tail: f32 = at.iter().zip(&b[k][n8..]).map(|(x, y)| x * y).sum();
        out[k] = acc[k].iter().sum::<f32>() + tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_sum() {
        let (n, d) = (37, 29);
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        for threads in [1, 3] {
            let mut acc = vec![0.0; packed_len(d)];
            accumulate(&mut acc, &x, n, d, threads, &mut Vec::new());
            for i in 0..d {
                for j in i..d {
                    let want: f64 = (0..n)
                        .map(|r| f64::from(x[r * d + i]) * f64::from(x[r * d + j]))
                        .sum();
                    let got = acc[packed_index(d, i, j)];
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "({i},{j}) {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_covers_all_rows() {
        for (d, p) in [(1, 4), (10, 3), (640, 2), (2048, 7)] {
            let b = split_rows(d, p);
            assert_eq!((b[0], *b.last().unwrap()), (0, d));
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[cfg(test)]
mod speed {
    /// Throughput of `accumulate` (a report, run with --ignored).
    #[test]
    #[ignore]
    fn gram_speed() {
        let (n, d) = (128, 2048);
        let x: Vec<f32> = (0..n * d).map(|i| (i % 17) as f32 * 0.1).collect();
        let mut acc = vec![0.0; super::packed_len(d)];
        let mut xt = Vec::new();
        for threads in [1, 2] {
            let t = std::time::Instant::now();
            super::accumulate(&mut acc, &x, n, d, threads, &mut xt);
            let s = t.elapsed().as_secs_f64();
            let macs = (super::packed_len(d) * n) as f64;
            println!(
                "gram d={d} n={n} threads={threads}: {:.3} s, {:.2} GMAC/s",
                s,
                macs / s / 1e9
            );
        }
    }
}
