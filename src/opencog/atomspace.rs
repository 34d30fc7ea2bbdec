//! AtomSpace: truth values on the 8-bit grid, atom types, and hypergraph
//! connections as pairs of atom indices.

use super::{count, quantize_unit_u8};
use crate::error::Result;
use crate::rng::Stream;

/// Number of distinct synthetic atom types.
pub const N_ATOM_TYPES: u64 = 10;

/// A synthetic, quantized AtomSpace.
#[derive(Clone, Debug, PartialEq)]
pub struct AtomSpace {
    /// One truth value per atom, in [0, 1] on the grid k/255.
    pub truth_values: Vec<f32>,
    /// One type per atom, in `0..N_ATOM_TYPES`.
    pub atom_types: Vec<i64>,
    /// `2 * n_connections` atom indices: connection `i` links
    /// `connections[2i]` to `connections[2i+1]`.
    pub connections: Vec<i64>,
}

impl AtomSpace {
    /// `n_atoms >= 1` atoms and `n_connections >= 1` connections.
    pub fn generate(n_atoms: i32, n_connections: i32, rng: &mut Stream) -> Result<AtomSpace> {
        let n_atoms = count("n_atoms", n_atoms, 1)?;
        let n_connections = count("n_connections", n_connections, 1)?;
        let truth_values = (0..n_atoms)
            .map(|_| quantize_unit_u8(rng.uniform() as f32))
            .collect();
        let atom_types = (0..n_atoms)
            .map(|_| rng.below(N_ATOM_TYPES) as i64)
            .collect();
        let connections = (0..2 * n_connections)
            .map(|_| rng.below(n_atoms as u64) as i64)
            .collect();
        Ok(AtomSpace {
            truth_values,
            atom_types,
            connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeedSequence;

    #[test]
    fn invariants_hold() {
        let mut s = SeedSequence::new(1).next_stream();
        let a = AtomSpace::generate(100, 50, &mut s).unwrap();
        assert_eq!(a.connections.len(), 100);
        assert!(a.connections.iter().all(|&c| (0..100).contains(&c)));
        assert!(a.atom_types.iter().all(|&t| (0..10).contains(&t)));
        assert!(a
            .truth_values
            .iter()
            .all(|&v| (v * 255.0 - (v * 255.0).round()).abs() < 1e-4));
        assert!(AtomSpace::generate(0, 1, &mut s).is_err());
        assert!(AtomSpace::generate(1, 0, &mut s).is_err());
    }
}
