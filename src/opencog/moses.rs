//! MOSES program trees: a random binary tree of bounded depth, node weights
//! on the 6-bit grid -4 + 8k/63, and an operation per node.

use super::count;
use crate::error::{Error, Result};
use crate::rng::Stream;

/// Number of distinct synthetic operations.
pub const N_OPERATIONS: u64 = 8;
/// Weights are clamped to [-WEIGHT_RANGE, WEIGHT_RANGE] before quantization.
pub const WEIGHT_RANGE: f32 = 4.0;

/// Rounds `w`, clamped to [-4, 4], to the nearest point of -4 + 8k/63.
pub fn quantize_weight_6bit(w: f32) -> f32 {
    let k = ((w.clamp(-WEIGHT_RANGE, WEIGHT_RANGE) + WEIGHT_RANGE) * 63.0 / (2.0 * WEIGHT_RANGE))
        .round();
    -WEIGHT_RANGE + k * (2.0 * WEIGHT_RANGE) / 63.0
}

/// A synthetic, quantized MOSES program tree. Node 0 is the root.
#[derive(Clone, Debug, PartialEq)]
pub struct MosesTree {
    /// One weight per node, on the 6-bit grid.
    pub weights: Vec<f32>,
    /// One operation per node, in `0..N_OPERATIONS`.
    pub operations: Vec<i32>,
    /// Two entries per node: its left and right child, or -1.
    pub connections: Vec<i32>,
}

impl MosesTree {
    /// A random binary tree of `n_nodes` nodes whose depth (root at 0) is at
    /// most `tree_depth`; fails when `n_nodes > 2^(tree_depth+1) - 1`.
    pub fn generate(n_nodes: i32, tree_depth: i32, rng: &mut Stream) -> Result<MosesTree> {
        let n = count("n_nodes", n_nodes, 1)?;
        if tree_depth < 0 {
            return Err(Error::invalid(
                "tree_depth",
                format!("{tree_depth} is negative"),
            ));
        }
        let capacity = if tree_depth >= 62 {
            u64::MAX
        } else {
            (1u64 << (tree_depth + 1)) - 1
        };
        if n as u64 > capacity {
            return Err(Error::invalid(
                "n_nodes",
                format!(
                    "{n} nodes do not fit a binary tree of depth {tree_depth} (at most {capacity})"
                ),
            ));
        }
        let mut connections = vec![-1i32; 2 * n];
        let mut depth = vec![0i32; n];
        // Free child slots (parent * 2 + side) of nodes above the depth limit.
        let mut open: Vec<usize> = if tree_depth > 0 { vec![0, 1] } else { vec![] };
        for node in 1..n {
            let pick = rng.below(open.len() as u64) as usize;
            let slot = open.swap_remove(pick);
            connections[slot] = node as i32;
            depth[node] = depth[slot / 2] + 1;
            if depth[node] < tree_depth {
                open.extend([2 * node, 2 * node + 1]);
            }
        }
        let weights = (0..n)
            .map(|_| quantize_weight_6bit(rng.normal() as f32))
            .collect();
        let operations = (0..n).map(|_| rng.below(N_OPERATIONS) as i32).collect();
        Ok(MosesTree {
            weights,
            operations,
            connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeedSequence;

    fn depth_of_tree(conn: &[i32]) -> Option<i32> {
        let n = conn.len() / 2;
        let mut seen = vec![false; n];
        let mut stack = vec![(0usize, 0i32)];
        let mut max = 0;
        while let Some((v, d)) = stack.pop() {
            if std::mem::replace(&mut seen[v], true) {
                return None;
            }
            max = max.max(d);
            for c in [conn[2 * v], conn[2 * v + 1]] {
                if c >= 0 {
                    stack.push((c as usize, d + 1));
                }
            }
        }
        seen.iter().all(|&s| s).then_some(max)
    }

    #[test]
    fn trees_are_trees_within_depth() {
        let mut s = SeedSequence::new(9).next_stream();
        for (n, d) in [
            (1, 0),
            (3, 1),
            (7, 2),
            (50, 5),
            (100, 6),
            (63, 5),
            (1000, 30),
        ] {
            let t = MosesTree::generate(n, d, &mut s).unwrap();
            let depth = depth_of_tree(&t.connections).expect("a tree");
            assert!(depth <= d, "depth {depth} > {d}");
        }
        assert!(MosesTree::generate(100, 2, &mut s).is_err());
        assert!(MosesTree::generate(64, 5, &mut s).is_err());
        assert!(MosesTree::generate(2, 0, &mut s).is_err());
    }

    #[test]
    fn weights_are_on_the_grid() {
        assert_eq!(quantize_weight_6bit(-9.0), -4.0);
        assert_eq!(quantize_weight_6bit(9.0), 4.0);
        let w = quantize_weight_6bit(0.3);
        let k = (w + 4.0) * 63.0 / 8.0;
        assert!((k - k.round()).abs() < 1e-4);
        assert!((w - 0.3).abs() <= 4.0 / 63.0 + 1e-6);
    }
}
