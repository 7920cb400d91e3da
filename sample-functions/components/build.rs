//! Builds every guest as a WebAssembly component with one nested
//! `cargo build --release --target wasm32-wasip2 -p ... -p ...`, then
//! writes their paths to `$OUT_DIR/components.rs` for `src/lib.rs`.
//!
//! The nested build uses its own target directory (`wasm-guests` inside the
//! outer one), so it never waits on the lock the outer build holds, and it
//! is incremental: rebuilding after a change to one guest recompiles that
//! guest only.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Constant name, package, what it is.
const GUESTS: &[(&str, &str, &str)] = &[
    (
        "TAG_FILTER",
        "sample-tag-filter",
        "Filter: tags against the boolean expression in config `tags`.",
    ),
    (
        "JSON_FILTER",
        "sample-json-filter",
        "Filter: JSON fields against the predicate in config `predicate`.",
    ),
    (
        "PII_REDACT",
        "sample-pii-redact",
        "Transform: redacts emails, phone and card numbers.",
    ),
    (
        "ROUTER",
        "sample-router",
        "Transform: routes by JSON field (config `field`, `routes`, `default`).",
    ),
    (
        "ORDER_TOTALS",
        "sample-order-totals",
        "Handler: running total per customer in kv.",
    ),
    (
        "REMINDER",
        "sample-reminder",
        "Handler: schedules a follow-up (config `topic`, `delay_ms`).",
    ),
    (
        "ENDLESS_LOOP",
        "test-guest-endless-loop",
        "Test filter that never returns.",
    ),
    (
        "MEMORY_BOMB",
        "test-guest-memory-bomb",
        "Test filter that allocates until it dies.",
    ),
    (
        "TRAP",
        "test-guest-trap",
        "Test handler that panics with `boom: deliberate panic`.",
    ),
    (
        "HUGE_OUTPUT",
        "test-guest-huge-output",
        "Test transform returning config `output_bytes` (64 MiB) per input.",
    ),
    (
        "WRONG_WORLD",
        "test-guest-wrong-world",
        "Test component exporting `run: func()` from world `test:wrong/wrong`.",
    ),
    (
        "TRIVIAL_FILTER",
        "test-guest-trivial-filter",
        "Test filter keeping every message (per-message cost benchmark).",
    ),
    (
        "KV_CONFIG",
        "test-guest-kv-config",
        "Test handler making every host call (kv, config, log, emit, schedule, clock).",
    ),
];

const TARGET: &str = "wasm32-wasip2";

const MISSING_TARGET: &str = "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2` (scripts/setup.sh does this)";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("sample-functions/components sits two levels below the workspace root")
        .to_path_buf();
    for path in [
        "wit",
        "guest-sdk",
        "protocol/src",
        "protocol/Cargo.toml",
        "sample-functions",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    if !target_installed(&rustc) {
        panic!("{MISSING_TARGET}");
    }

    let target_dir = nested_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for (_, package, _) in GUESTS {
        cmd.arg("-p").arg(package);
    }
    scrub_env(&mut cmd);
    // No DWARF in the guests: the workspace's release profile keeps line
    // tables, which linked into a component together with the standard
    // library's make it about 3 MB instead of 70-210 KB. The name section
    // stays, so traps still name the guest's functions.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the nested cargo build of the guests: {e}"));
    if !status.success() {
        if !target_installed(&rustc) {
            panic!("{MISSING_TARGET}");
        }
        panic!("building the wasm32-wasip2 guests failed ({status}); the compiler output is above");
    }

    let release = target_dir.join(TARGET).join("release");
    let mut code = String::new();
    let mut embedded = String::new();
    let mut all = String::new();
    for (name, package, what) in GUESTS {
        let path = release.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            path.is_file(),
            "the nested build did not produce {}",
            path.display()
        );
        let path = path.to_str().expect("the target directory path is UTF-8");
        writeln!(
            code,
            "/// `{package}`: {what}\npub const {name}: &str = {path:?};"
        )
        .unwrap();
        writeln!(all, "    ({package:?}, {name}),").unwrap();
        if package.starts_with("sample-") {
            writeln!(
                embedded,
                "/// `{package}`: {what}\npub static {name}: &[u8] = include_bytes!({path:?});"
            )
            .unwrap();
        }
    }
    writeln!(
        code,
        "/// Every guest as `(package name, component path)`.\npub const ALL: &[(&str, &str)] = &[\n{all}];"
    )
    .unwrap();
    std::fs::write(out_dir.join("components.rs"), code).expect("write components.rs");
    std::fs::write(out_dir.join("embedded.rs"), embedded).expect("write embedded.rs");
}

/// Whether the standard library for wasm32-wasip2 is installed for `rustc`.
fn target_installed(rustc: &OsString) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

/// `<outer target dir>/wasm-guests`, found from
/// `OUT_DIR = <target>[/<triple>]/<profile>/build/<package>-<hash>/out`.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let Some(mut root) = out_dir.ancestors().nth(4) else {
        return out_dir.join("wasm-guests");
    };
    if let Ok(triple) = env::var("TARGET")
        && root.file_name().is_some_and(|n| n == triple.as_str())
        && let Some(parent) = root.parent()
    {
        root = parent;
    }
    root.join("wasm-guests")
}

/// Removes what the outer cargo set for this build script and would
/// mislead the nested build: flags and target for the host build, the
/// target dir, clippy's wrapper, and the per-package variables (a host
/// `CARGO_CFG_TARGET_FEATURE` left in place would reach the guests' build
/// scripts). The jobserver (`CARGO_MAKEFLAGS`) stays, so both builds share
/// the same job slots.
fn scrub_env(cmd: &mut Command) {
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_BUILD_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "NUM_JOBS",
        "RUSTC_LINKER",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if [
            "CARGO_CFG_",
            "CARGO_FEATURE_",
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "DEP_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "CARGO_PRIMARY_PACKAGE"
        {
            cmd.env_remove(key);
        }
    }
}
