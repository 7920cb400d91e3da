//! Running the `sluice` binary and checking what it printed.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The binary with a clean environment (no SLUICE_* from the caller).
pub fn sluice(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout of a command that must succeed.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Stdout and stderr of a command that must exit with `code`.
pub fn exits(out: Output, code: i32) -> (String, String) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Stderr of a command that must fail with exit code 1 and print nothing.
pub fn fails(out: Output) -> String {
    let (stdout, stderr) = exits(out, 1);
    assert!(stdout.is_empty(), "stdout: {stdout}\nstderr: {stderr}");
    stderr
}

/// Runs `cmd` with `input` on its stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The whitespace-separated cells of a table line.
pub fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
