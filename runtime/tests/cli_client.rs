//! The client commands of the `sluice` binary (`topic`, `produce`,
//! `consume`) run as a user would run them, against a real broker started
//! in process on its own runtime.

mod common;

use std::process::{Command, Stdio};

use common::{Broker, describe, fails, ok, run, run_with_stdin, sluice};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let broker = Broker::start();
    let out = ok(run(&mut broker.sluice(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--config",
        "durability=sync",
    ])));
    assert_eq!(out, "created topic orders with 3 partition(s)\n");
    ok(run(&mut broker.sluice(&["topic", "create", "audit"])));

    let err = fails(run(&mut broker.sluice(&["topic", "create", "orders"])));
    assert!(
        err.starts_with("error: cannot create topic orders: ") && err.contains("already exists"),
        "{err}"
    );
    let err = fails(run(&mut broker.sluice(&[
        "topic",
        "create",
        "bad",
        "--config",
        "durability",
    ])));
    assert!(err.contains("--config takes name=value"), "{err}");

    // Flags instead of the environment and the default CA path, from
    // another directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = ok(run(sluice(&[
        "topic",
        "list",
        "--broker",
        &broker.addr,
        "--ca-cert",
    ])
    .arg(&broker.cert)
    .current_dir(elsewhere.path())));
    assert_eq!(
        lines(&out),
        ["TOPIC   PARTITIONS", "audit   1", "orders  3"],
        "{out}"
    );

    ok(run(
        &mut broker.sluice(&["produce", "orders", "-p", "2", "a", "b"])
    ));
    let out = ok(run(&mut broker.sluice(&["topic", "describe", "orders"])));
    let l = lines(&out);
    assert_eq!(l[0], "topic orders (3 partition(s))", "{out}");
    assert_eq!(l[1], "config:", "{out}");
    assert!(
        l.iter()
            .any(|line| line.starts_with("  durability ") && line.ends_with(" sync")),
        "{out}"
    );
    let header = l
        .iter()
        .position(|line| line.starts_with("PARTITION"))
        .expect("a partition table");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(l[header]),
        [
            "PARTITION",
            "START",
            "HIGH-WATERMARK",
            "MESSAGES",
            "SIZE",
            "SEGMENTS"
        ]
    );
    assert_eq!(cells(l[header + 1])[..4], ["0", "0", "0", "0"], "{out}");
    assert_eq!(cells(l[header + 3])[..4], ["2", "0", "2", "2"], "{out}");
    assert_eq!(cells(l[header + 4])[..2], ["total", "2"], "{out}");

    let out = ok(run(&mut broker.sluice(&["topic", "delete", "orders"])));
    assert_eq!(out, "deleted topic orders\n");
    ok(run(&mut broker.sluice(&["topic", "delete", "audit"])));
    let out = ok(run(&mut broker.sluice(&["topic", "list"])));
    assert_eq!(out, "no topics\n");
    let err = fails(run(&mut broker.sluice(&["topic", "describe", "orders"])));
    assert!(
        err.starts_with("error: cannot describe topic orders: ") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn produced_messages_consume_back_with_keys_tags_and_headers() {
    let broker = Broker::start();
    ok(run(&mut broker.sluice(&[
        "topic",
        "create",
        "events",
        "--partitions",
        "2",
    ])));

    let out = ok(run(&mut broker.sluice(&[
        "produce",
        "events",
        "--partition",
        "0",
        "--key",
        "k1",
        "--tag",
        "eu",
        "--tag",
        "vip",
        "--header",
        "trace=abc",
        "--header",
        "eq=x=y",
        "one",
        "two",
    ])));
    assert_eq!(
        out,
        "sent 2 message(s) to events: partition 0 offsets 0-1\n"
    );

    let out = ok(run_with_stdin(
        &mut broker.sluice(&["produce", "events", "--partition", "1"]),
        "line one\nline two\r\nline three\n",
    ));
    assert_eq!(
        out,
        "sent 3 message(s) to events: partition 1 offsets 0-2\n"
    );

    let out = ok(run(&mut broker.sluice(&["consume", "events", "--json"])));
    let messages: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 5, "{out}");
    let in_partition = |p: u64| {
        messages
            .iter()
            .filter(|m| m["partition"] == p)
            .collect::<Vec<_>>()
    };
    let p0 = in_partition(0);
    let values: Vec<_> = p0.iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["one", "two"]);
    for (i, m) in p0.iter().enumerate() {
        assert_eq!(m["topic"], "events");
        assert_eq!(m["offset"], i as u64);
        assert_eq!(m["key"], "k1");
        assert_eq!(m["tags"], serde_json::json!(["eu", "vip"]));
        assert_eq!(
            m["properties"],
            serde_json::json!({"trace": "abc", "eq": "x=y"})
        );
        assert_eq!(m["id"].as_str().unwrap().len(), 36, "{m}");
        assert!(m["timestamp"].as_i64().unwrap() > 1_600_000_000_000, "{m}");
        assert!(m.get("value_hex").is_none(), "{m}");
    }
    assert_ne!(p0[0]["id"], p0[1]["id"]);
    let p1 = in_partition(1);
    let values: Vec<_> = p1.iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["line one", "line two", "line three"]);
    for m in &p1 {
        assert_eq!(m["key"], serde_json::Value::Null);
        assert_eq!(m["tags"], serde_json::json!([]));
        assert_eq!(m["properties"], serde_json::json!({}));
    }

    // Plain output, one partition.
    let out = ok(run(&mut broker.sluice(&["consume", "events", "-p", "0"])));
    assert_eq!(
        lines(&out),
        ["0/0 key=k1 tags=eu,vip one", "0/1 key=k1 tags=eu,vip two"]
    );

    // From an offset, in every partition.
    let out = ok(run(
        &mut broker.sluice(&["consume", "events", "--from", "offset:1"])
    ));
    let mut got = lines(&out);
    got.sort();
    assert_eq!(
        got,
        [
            "0/1 key=k1 tags=eu,vip two",
            "1/1 line two",
            "1/2 line three"
        ]
    );

    let out = ok(run(&mut broker.sluice(&[
        "consume", "events", "-p", "1", "--from", "offset:1", "--max", "1",
    ])));
    assert_eq!(out, "1/1 line two\n");

    // Nothing newer than now: caught up at once.
    let out = ok(run(
        &mut broker.sluice(&["consume", "events", "--from", "latest"])
    ));
    assert_eq!(out, "");
    let out =
        ok(run(&mut broker.sluice(&[
            "consume", "events", "-p", "1", "--from", "ago:1h",
        ])));
    assert_eq!(lines(&out).len(), 3, "{out}");

    // Without --partition: spread over both partitions, all acknowledged.
    let out = ok(run_with_stdin(
        &mut broker.sluice(&["produce", "events"]),
        "a\nb\nc\nd\n",
    ));
    assert!(out.starts_with("sent 4 message(s) to events: "), "{out}");
    let out = ok(run(&mut broker.sluice(&["consume", "events"])));
    assert_eq!(lines(&out).len(), 9, "{out}");

    // One-way: no offsets, but the command waits for the messages to land.
    let out =
        ok(run(&mut broker.sluice(&[
            "produce", "events", "--oneway", "-p", "0", "ow1", "ow2",
        ])));
    assert_eq!(
        out,
        "sent 2 message(s) to events one-way (not acknowledged, offsets unknown)\n"
    );
    let out =
        ok(run(&mut broker.sluice(&[
            "consume", "events", "-p", "0", "--from", "offset:2",
        ])));
    let values: Vec<_> = lines(&out)
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert!(values.ends_with(&["ow1", "ow2"]), "{out}");

    let err = fails(run(&mut broker.sluice(&["produce", "nosuch", "x"])));
    assert!(
        err.starts_with("error: cannot send to topic nosuch: ") && err.contains("does not exist"),
        "{err}"
    );
    let err = fails(run(&mut broker.sluice(&["consume", "nosuch"])));
    assert!(
        err.starts_with("error: cannot read topic nosuch: "),
        "{err}"
    );
    let err = fails(run(&mut broker.sluice(&[
        "produce",
        "events",
        "--header",
        "sluice.id=x",
        "v",
    ])));
    assert!(err.contains("reserved"), "{err}");
}

#[test]
fn follow_prints_new_messages_until_interrupted() {
    use std::io::{BufRead, BufReader};
    let broker = Broker::start();
    ok(run(
        &mut broker.sluice(&["topic", "create", "live", "-p", "1"])
    ));
    let mut child = broker
        .sluice(&["consume", "live", "--follow", "--from", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Keep producing until the follower, which may still be starting,
    // prints one: it started at "latest", so it may miss the first ones.
    let mut line = String::new();
    let reader = std::thread::spawn(move || {
        stdout.read_line(&mut line).unwrap();
        line
    });
    for i in 0.. {
        ok(run(&mut broker.sluice(&[
            "produce",
            "live",
            &format!("m{i}"),
        ])));
        if reader.is_finished() || i > 100 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let line = reader.join().unwrap();
    assert!(line.starts_with("0/") && line.contains(" m"), "{line}");
    assert!(child.try_wait().unwrap().is_none(), "--follow exited early");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("--follow did not stop on SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn an_unreachable_broker_is_reported_clearly() {
    let broker = Broker::start();
    // A port nothing listens on.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    for args in [
        &["topic", "list"][..],
        &["produce", "events", "x"],
        &["consume", "events"],
    ] {
        let started = std::time::Instant::now();
        let err = fails(run(sluice(args)
            .args(["--broker", &addr, "--connect-timeout", "0.5", "--ca-cert"])
            .arg(&broker.cert)));
        assert!(
            err.starts_with(&format!("error: cannot reach the broker at {addr}: ")),
            "{args:?}: {err}"
        );
        assert!(err.contains("is the broker running?"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(4));
    }
}

#[test]
fn a_missing_ca_certificate_says_where_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = fails(run(sluice(&["topic", "list", "--ca-cert"])
        .arg(&missing)
        .current_dir(dir.path())));
    assert!(
        err.starts_with(&format!(
            "error: the CA certificate file {} does not exist",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("`sluice dev` writes"), "{err}");
    assert!(err.contains("<data-dir>/tls/cert.pem"), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");

    // No flag and no ./sluice-data/tls/cert.pem here.
    let err = fails(run(sluice(&["consume", "events"]).current_dir(dir.path())));
    assert!(
        err.starts_with("error: no CA certificate to trust the broker with"),
        "{err}"
    );
    assert!(err.contains("./sluice-data/tls/cert.pem"), "{err}");

    // The environment variable is read too.
    let err = fails(run(sluice(&["produce", "events", "x"])
        .env("SLUICE_CA_CERT", &missing)
        .current_dir(dir.path())));
    assert!(err.contains(&missing.display().to_string()), "{err}");

    // A file that is no certificate.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = fails(run(sluice(&["topic", "list", "--ca-cert"]).arg(&junk)));
    assert!(
        err.starts_with(&format!(
            "error: cannot read the CA certificate {}",
            junk.display()
        )),
        "{err}"
    );
}

#[test]
fn from_explains_its_syntax() {
    let out = run(&mut sluice(&["consume", "events", "--from", "12"]));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("offset:12"), "{err}");
    let out = run(&mut sluice(&["consume", "--help"]));
    let help = ok(out);
    for form in [
        "earliest",
        "latest",
        "offset:<N>",
        "time:<MS>",
        "ago:<N><U>",
    ] {
        assert!(help.contains(form), "{help}");
    }
}
