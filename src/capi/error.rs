//! Error reporting: the last failure message of the calling thread.

use std::cell::RefCell;
use std::ffi::{c_char, CString};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// The message of the last failed ggml_qat_* call on this thread ("" when no
/// call has failed). Never NULL; valid until the next failing call on this
/// thread. A successful call does not clear it.
#[no_mangle]
pub extern "C" fn ggml_qat_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
