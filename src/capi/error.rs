//! Error reporting: the last failure message of the calling thread.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` for this thread. Never panics: while the thread is exiting
/// (its thread-locals already destroyed, e.g. a call from a pthread key
/// destructor) the message has nowhere to live and is dropped.
pub(crate) fn set_last_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed ggml_qat_* call on this thread ("" when no
/// call has failed). Never NULL; valid until the next failing call on this
/// thread. A successful call does not clear it.
// Not wrapped in `ffi_boundary!` (which records into the same thread-local): it
// cannot panic. `try_with` covers a call during thread exit, after the
// thread-local was destroyed (then ""); the RefCell is only borrowed
// mutably inside set_last_error, never across a call out.
#[no_mangle]
pub extern "C" fn ggml_qat_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}
