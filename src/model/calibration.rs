//! The calibration file of `ggml-qat-calibrate` (`--calibration`): a GGUF
//! imatrix in llama-imatrix's layout, whose diagonal (`NAME.in_sum2`,
//! `NAME.counts`) is read by [`imatrix::from_gguf`] exactly as `--imatrix`
//! reads it, plus our keys:
//!
//! - `ggml_qat.calibration.version` (u32, 1; required) and the other
//!   `ggml_qat.calibration.*` keys (informational, not read);
//! - Gram matrices (`ENTRY.gram` tensors, `ggml_qat.gram.*` keys): under
//!   `--optimize`, the Gram quantizer's (read on demand by [`Grams`]);
//!   otherwise accepted and never read;
//! - the model's own planner factors, optional: `ggml_qat.factors.roles`
//!   (strings, a factors file's role names) with `ggml_qat.factors.values`
//!   (f32, finite and above 0, one per role), `ggml_qat.factors.depth`
//!   (3 f32), and what they were measured with: `.probe_type` and
//!   `.measure` (strings), `.tokens` (u32). Roles not named keep their
//!   default, as in a factors file ([`Factors::parse`]).
//!
//! Hostile-input safe as the imatrix reader: one bounded header read
//! ([`gguf::read_header`]: regular files only, every size checked against
//! the file), keys decoded with bounds checks, and a key of the wrong type
//! or length, an unknown or repeated role, or a value that is not finite
//! and positive is an error naming the file and the key.

use std::path::Path;

use super::factors::{role_index, Factors, FactorsUsed};
use super::gguf::{self, Header, Kv};
use super::gram::Grams;
use super::imatrix::{self, Imatrix};
use super::ModelError;

pub const KEY_VERSION: &str = "ggml_qat.calibration.version";
pub const KEY_ROLES: &str = "ggml_qat.factors.roles";
pub const KEY_VALUES: &str = "ggml_qat.factors.values";
pub const KEY_DEPTH: &str = "ggml_qat.factors.depth";
pub const KEY_PROBE_TYPE: &str = "ggml_qat.factors.probe_type";
pub const KEY_MEASURE: &str = "ggml_qat.factors.measure";
pub const KEY_TOKENS: &str = "ggml_qat.factors.tokens";
/// The version of the file this reader knows.
pub const VERSION: u64 = 1;

/// What the quantizer takes from a calibration file.
pub struct Calibration {
    /// The diagonal: the importance matrix, as `--imatrix` reads it.
    pub imatrix: Imatrix,
    /// The planner's factors measured on the model (source "calibration
    /// file"), when the file has them.
    pub factors: Option<FactorsUsed>,
    /// The Gram matrices, when asked for and the file has them.
    pub grams: Option<Grams>,
}

fn fail(path: &Path, key: &str, what: impl std::fmt::Display) -> ModelError {
    ModelError::Calibration(format!("{}: {key}: {what}", path.display()))
}

/// Reads the calibration file `path` (and, with `grams`, where its Gram
/// matrices are).
pub fn load(path: &Path, grams: bool) -> Result<Calibration, ModelError> {
    let h = gguf::read_header(path)?;
    match h.kv(KEY_VERSION) {
        None => return Err(fail(
            path,
            KEY_VERSION,
            "missing: not a calibration file of ggml-qat-calibrate (an imatrix goes to --imatrix)",
        )),
        Some(k) if k.ty != gguf::vt::U32 => return Err(fail(path, KEY_VERSION, "not a u32")),
        Some(k) if k.as_u64() != Some(VERSION) => {
            return Err(fail(
                path,
                KEY_VERSION,
                format!(
                    "version {}, this build reads {VERSION}",
                    k.as_u64().unwrap_or(0)
                ),
            ))
        }
        Some(_) => {}
    }
    let factors = factors(path, &h)?;
    let imatrix = imatrix::from_gguf(path, &h)?;
    let grams = if grams { Grams::load(path, &h)? } else { None };
    Ok(Calibration {
        imatrix,
        factors,
        grams,
    })
}

/// The key `key` decoded by `get` when present; `want` names its type.
fn typed<'h, T>(
    path: &Path,
    h: &'h Header,
    key: &str,
    want: &str,
    get: impl Fn(&'h Kv) -> Option<T>,
) -> Result<Option<T>, ModelError> {
    h.kv(key)
        .map(|k| get(k).ok_or_else(|| fail(path, key, format!("{want} expected"))))
        .transpose()
}

/// Every value finite and above 0, as f64.
fn positive(path: &Path, key: &str, v: &[f32]) -> Result<Vec<f64>, ModelError> {
    if let Some((i, x)) = v
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && **x > 0.0))
    {
        return Err(fail(
            path,
            key,
            format!("value [{i}] is {x}: a finite number above 0 expected"),
        ));
    }
    Ok(v.iter().map(|&x| x as f64).collect())
}

/// The planner's factors of the file, `None` when it names no role and no
/// depth.
fn factors(path: &Path, h: &Header) -> Result<Option<FactorsUsed>, ModelError> {
    let string = |k: &Kv| k.as_str().map(str::to_string);
    let roles = typed(path, h, KEY_ROLES, "an array of strings", Kv::as_strs)?;
    let values = typed(path, h, KEY_VALUES, "an array of f32", Kv::as_f32s)?;
    let depth = typed(path, h, KEY_DEPTH, "an array of 3 f32", Kv::as_f32s)?;
    let probe_type = typed(path, h, KEY_PROBE_TYPE, "a string", string)?;
    let measure = typed(path, h, KEY_MEASURE, "a string", string)?;
    let tokens = typed(path, h, KEY_TOKENS, "a u32", |k| {
        (k.ty == gguf::vt::U32).then(|| k.as_u64()).flatten()
    })?;
    let mut f = Factors::default();
    set_roles(path, &mut f, roles.as_deref(), values.as_deref())?;
    // No role named (none measured) and no depth: the default factors.
    if roles.map_or(true, |r| r.is_empty()) && depth.is_none() {
        return Ok(None);
    }
    if let Some(d) = depth {
        f.depth = positive(path, KEY_DEPTH, &d)?
            .try_into()
            .map_err(|v: Vec<f64>| {
                fail(path, KEY_DEPTH, format!("{} values, 3 expected", v.len()))
            })?;
    }
    Ok(Some(FactorsUsed {
        source: "calibration file",
        calibration_file: Some(path.display().to_string()),
        probe_type,
        measure,
        tokens: tokens.map(|t| t as u32),
        values: f,
    }))
}

/// The roles the file names, each set once to its value.
fn set_roles(
    path: &Path,
    f: &mut Factors,
    roles: Option<&[&str]>,
    values: Option<&[f32]>,
) -> Result<(), ModelError> {
    let (roles, values) = match (roles, values) {
        (None, None) => return Ok(()),
        (Some(_), None) => {
            return Err(fail(
                path,
                KEY_VALUES,
                format!("missing ({KEY_ROLES} is given)"),
            ))
        }
        (None, Some(_)) => {
            return Err(fail(
                path,
                KEY_ROLES,
                format!("missing ({KEY_VALUES} is given)"),
            ))
        }
        (Some(r), Some(v)) => (r, v),
    };
    if roles.len() != values.len() {
        return Err(fail(
            path,
            KEY_VALUES,
            format!(
                "{} values for {} roles in {KEY_ROLES}",
                values.len(),
                roles.len()
            ),
        ));
    }
    let values = positive(path, KEY_VALUES, values)?;
    let mut seen = vec![false; f.roles.len()];
    for (name, x) in roles.iter().zip(values) {
        let i = role_index(name)
            .ok_or_else(|| fail(path, KEY_ROLES, format!("unknown role '{name}'")))?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(fail(path, KEY_ROLES, format!("role '{name}' named twice")));
        }
        f.roles[i] = x;
    }
    Ok(())
}
