//! OpenCog structures: created from the context's generator, returned as
//! malloc'ed C structs, freed by the matching ggml_qat_free_* function.

use std::ffi::c_int;

use super::context::{session, QatContext};
use super::ffi_boundary;
use super::types::{ggml_qat_atomspace_t, ggml_qat_ecan_t, ggml_qat_moses_tree_t, GgmlContext};
use crate::error::{Error, Result};
use crate::opencog::{AtomSpace, Ecan, MosesTree};
use crate::qat::{LayerClass, Session};

/// A malloc'ed copy of `v` (freed with `free`).
fn c_array<T: Copy>(v: &[T]) -> Result<*mut T> {
    let bytes = std::mem::size_of_val(v).max(1);
    let p = unsafe { libc::malloc(bytes) } as *mut T;
    if p.is_null() {
        return Err(Error::Ggml(format!(
            "out of memory allocating {bytes} bytes"
        )));
    }
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len()) };
    Ok(p)
}

/// A malloc'ed struct built by `make` from malloc'ed copies of three arrays;
/// on failure nothing stays allocated.
fn c_struct<T, A: Copy, B: Copy, C: Copy>(
    a: &[A],
    b: &[B],
    c: &[C],
    make: impl FnOnce(*mut A, *mut B, *mut C) -> T,
) -> Result<*mut T> {
    let pa = c_array(a);
    let pb = c_array(b);
    let pc = c_array(c);
    let p = unsafe { libc::malloc(std::mem::size_of::<T>()) } as *mut T;
    match (pa, pb, pc) {
        (Ok(pa), Ok(pb), Ok(pc)) if !p.is_null() => {
            unsafe { p.write(make(pa, pb, pc)) };
            Ok(p)
        }
        (pa, pb, pc) => {
            let ptr = |r: Result<*mut libc::c_void>| r.unwrap_or(std::ptr::null_mut());
            unsafe {
                free_all(&[
                    ptr(pa.map(|p| p.cast())),
                    ptr(pb.map(|p| p.cast())),
                    ptr(pc.map(|p| p.cast())),
                    p.cast(),
                ])
            };
            Err(Error::Ggml("out of memory".into()))
        }
    }
}

/// Frees every non-NULL pointer with `free`.
unsafe fn free_all(ptrs: &[*mut libc::c_void]) {
    for &p in ptrs {
        libc::free(p);
    }
}

fn enabled(s: &Session, class: LayerClass, field: &'static str) -> Result<()> {
    if s.config().opencog_enabled(class) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "{field} is false in the configuration"
        )))
    }
}

/// A new AtomSpace of `n_atoms` atoms and `n_connections` connections (each
/// at least 1), synthetic data from the context's generator: truth values on the
/// 8-bit grid k/255, types in [0, 10), connections between existing atoms.
/// `ggml_ctx` is not used and may be NULL. NULL on bad sizes or when
/// enable_atomspace is false. Free with ggml_qat_free_atomspace().
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_create_atomspace(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    n_atoms: c_int,
    n_connections: c_int,
) -> *mut ggml_qat_atomspace_t {
    let _ = ggml_ctx;
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        enabled(s, LayerClass::AtomSpace, "enable_atomspace")?;
        let a = AtomSpace::generate(n_atoms, n_connections, &mut s.next_stream())?;
        c_struct(
            &a.truth_values,
            &a.atom_types,
            &a.connections,
            |truth_values, atom_types, connections| ggml_qat_atomspace_t {
                truth_values,
                atom_types,
                connections,
                n_atoms,
                n_connections,
            },
        )
    })
}

/// A new MOSES program tree: a random binary tree of `n_nodes` nodes whose
/// depth (root at 0) is at most `tree_depth`, weights clamped to [-4, 4] on
/// the 6-bit grid -4 + 8k/63, operations in [0, 8). NULL when the nodes
/// cannot fit (n_nodes > 2^(tree_depth+1) - 1), on bad sizes, or when
/// enable_moses is false. Free with ggml_qat_free_moses_tree().
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_create_moses_tree(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    n_nodes: c_int,
    tree_depth: c_int,
) -> *mut ggml_qat_moses_tree_t {
    let _ = ggml_ctx;
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        enabled(s, LayerClass::Moses, "enable_moses")?;
        let t = MosesTree::generate(n_nodes, tree_depth, &mut s.next_stream())?;
        c_struct(
            &t.weights,
            &t.operations,
            &t.connections,
            |weights, operations, connections| ggml_qat_moses_tree_t {
                weights,
                operations,
                connections,
                n_nodes,
            },
        )
    })
}

/// New ECAN attention values for `n_elements` (at least 1) elements: STI and LTI
/// on the 8-bit grid k/255; attention scores (0.7 STI + 0.3 LTI) quantized
/// 8-bit relative to their maximum, never below one step, renormalized to
/// sum to 1. NULL on bad sizes or when enable_ecan is false. Free with
/// ggml_qat_free_ecan().
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_create_ecan(
    ctx: *mut QatContext,
    ggml_ctx: *mut GgmlContext,
    n_elements: c_int,
) -> *mut ggml_qat_ecan_t {
    let _ = ggml_ctx;
    ffi_boundary!(std::ptr::null_mut(), {
        let s = session(ctx)?;
        enabled(s, LayerClass::Ecan, "enable_ecan")?;
        let e = Ecan::generate(n_elements, &mut s.next_stream())?;
        c_struct(
            &e.sti_values,
            &e.lti_values,
            &e.attention_scores,
            |sti_values, lti_values, attention_scores| ggml_qat_ecan_t {
                sti_values,
                lti_values,
                attention_scores,
                n_elements,
            },
        )
    })
}

/// Frees an AtomSpace from ggml_qat_create_atomspace() (NULL is accepted).
// Not wrapped in `ffi_boundary!`: it cannot panic (a NULL test and libc::free).
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_free_atomspace(atomspace: *mut ggml_qat_atomspace_t) {
    if let Some(a) = atomspace.as_ref() {
        free_all(&[
            a.truth_values.cast(),
            a.atom_types.cast(),
            a.connections.cast(),
        ]);
        libc::free(atomspace.cast());
    }
}

/// Frees a tree from ggml_qat_create_moses_tree() (NULL is accepted).
// Not wrapped in `ffi_boundary!`: it cannot panic (a NULL test and libc::free).
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_free_moses_tree(tree: *mut ggml_qat_moses_tree_t) {
    if let Some(t) = tree.as_ref() {
        free_all(&[t.weights.cast(), t.operations.cast(), t.connections.cast()]);
        libc::free(tree.cast());
    }
}

/// Frees ECAN values from ggml_qat_create_ecan() (NULL is accepted).
// Not wrapped in `ffi_boundary!`: it cannot panic (a NULL test and libc::free).
#[no_mangle]
pub unsafe extern "C" fn ggml_qat_free_ecan(ecan: *mut ggml_qat_ecan_t) {
    if let Some(e) = ecan.as_ref() {
        free_all(&[
            e.sti_values.cast(),
            e.lti_values.cast(),
            e.attention_scores.cast(),
        ]);
        libc::free(ecan.cast());
    }
}
