//! The sample functions and test guests, built as WebAssembly components.
//!
//! Building this crate builds every guest (`sample-functions/*` and
//! `sample-functions/test-guests/*`) for `wasm32-wasip2` in release mode,
//! with one nested cargo build in `<target dir>/wasm-guests` (see
//! `build.rs`), and exposes the absolute path of each component: one
//! constant per guest, [`ALL`] and [`all`] to iterate over them, [`bytes`]
//! to read one. The engine's tests and benchmarks depend on it (as a
//! dev-dependency) instead of building guests themselves.
//!
//! ```
//! let wasm = sluice_sample_components::bytes(sluice_sample_components::TRIVIAL_FILTER);
//! assert_eq!(&wasm[..4], b"\0asm");
//! assert!(sluice_sample_components::all().iter().any(|(name, _)| *name == "sample-router"));
//! ```

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The sample functions' bytes, built into the binary that uses them (the
/// broker's `sluice dev --demo` deploys them), one static per sample.
///
/// ```
/// assert_eq!(&sluice_sample_components::embedded::PII_REDACT[..4], b"\0asm");
/// ```
pub mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Every guest as `(package name, component path)`, in the order above.
///
/// ```
/// for (name, path) in sluice_sample_components::all() {
///     assert!(std::path::Path::new(path).is_file(), "{name}");
/// }
/// ```
pub fn all() -> &'static [(&'static str, &'static str)] {
    ALL
}

/// The component at `path` (one of this crate's constants).
///
/// # Panics
/// If it cannot be read, naming the path.
///
/// ```
/// let wasm = sluice_sample_components::bytes(sluice_sample_components::PII_REDACT);
/// assert!(wasm.len() > 1000);
/// ```
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read component {path}: {e}"))
}
