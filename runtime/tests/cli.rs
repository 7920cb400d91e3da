//! The `sluice` binary, run as a newcomer would run it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use sluice_broker::clock::SystemClock;
use sluice_broker::log::TopicConfig;

use common::sluice;
use common::store::{batch, open_store};

#[test]
fn dev_check_opens_the_store_and_reports_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_store(dir.path(), Arc::new(SystemClock));
        let cfg = TopicConfig {
            partitions: 3,
            ..TopicConfig::default()
        };
        store.create_topic("orders", cfg).unwrap();
        let batch = batch(&[b"x", b"y"]);
        store
            .log()
            .partition("orders", 1)
            .unwrap()
            .append(batch)
            .unwrap();
    }
    let out = sluice(&[])
        .args(["dev", "--check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 topic(s)"), "{stdout}");
    assert!(
        stdout.contains("orders (3 partition(s), durability sync)"),
        "{stdout}"
    );
    assert!(stdout.contains("partition 1: offsets [0, 2)"), "{stdout}");
}

#[test]
fn dev_explains_an_unusable_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = sluice(&[])
        .args(["dev", "--check", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opening the data directory"), "{stderr}");
}

#[test]
fn dev_shuts_down_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sluice(&[])
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until it says it is running, then ask it to stop.
    for line in lines.by_ref() {
        if line.unwrap().contains("is running") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.contains("Shutting down")), "{rest:?}");
    assert!(dir.path().join("meta").exists());
}

#[test]
fn help_lists_the_commands() {
    let out = sluice(&[]).arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for cmd in ["dev", "serve", "topic", "produce", "consume", "bench"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{stdout}"
        );
    }
}

#[test]
fn quic_benchmarks_run_end_to_end_and_write_json() {
    let dir = tempfile::tempdir().unwrap();
    for scenario in ["producer", "consumer", "e2e"] {
        let json = dir.path().join(format!("{scenario}.json"));
        let out = sluice(&[])
            .args(["bench", scenario, "--messages", "2000", "--producers", "2"])
            .args(["--partitions", "2", "--batch-size", "100", "--rate", "2000"])
            .args(["--seconds", "0.5", "--durability", "none", "--dir"])
            .arg(dir.path().join("scratch"))
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{scenario}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let figures: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert!(figures["msgs_per_sec"].as_f64().unwrap() > 0.0, "{figures}");
        assert!(figures["messages"].as_u64().unwrap() > 0, "{figures}");
        assert!(
            !dir.path().join("scratch").exists(),
            "scratch dir left behind"
        );
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sluice(&[])
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().starts_with("Sluice is running on ") {
            break;
        }
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DEBUG"), "no log lines on stderr: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in piped logs: {stderr}"
    );
}
