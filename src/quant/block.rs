//! Block structs over byte rows: every quantized format's block is a
//! `#[repr(C)]` struct of bytes laid out exactly as ggml's, so a row of bytes
//! can be viewed as a slice of blocks without copying.

/// A block type made of bytes only: its size equals ggml's `sizeof(block_…)`
/// and its alignment is 1.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of `u8`/`i8` arrays only (no
/// padding, alignment 1, every bit pattern valid).
pub unsafe trait Block: Sized {}

/// View a byte row as blocks.
///
/// # Panics
/// When `bytes.len()` is not a multiple of the block size.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> &[B] {
    let size = std::mem::size_of::<B>();
    assert!(std::mem::align_of::<B>() == 1);
    assert_eq!(bytes.len() % size, 0, "row is not a whole number of blocks");
    // SAFETY: `B: Block` has alignment 1, no padding and no invalid bit
    // patterns; the length is a whole number of blocks.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// View a mutable byte row as blocks.
///
/// # Panics
/// When `bytes.len()` is not a multiple of the block size.
pub fn as_blocks_mut<B: Block>(bytes: &mut [u8]) -> &mut [B] {
    let size = std::mem::size_of::<B>();
    assert!(std::mem::align_of::<B>() == 1);
    assert_eq!(bytes.len() % size, 0, "row is not a whole number of blocks");
    // SAFETY: as in `as_blocks`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), bytes.len() / size) }
}
