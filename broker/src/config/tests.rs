//! Tests of loading and checking the broker's configuration.

use super::*;

use clap::{CommandFactory, Parser};

fn invalid_message(result: Result<(), ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid(message)) => message,
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

/// A configuration `validate_for_serve` accepts.
fn serveable() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.tls.cert = Some("cert.pem".into());
    config.tls.key = Some("key.pem".into());
    config.auth.tokens = vec!["s3cret".into()];
    config
}

#[test]
fn defaults() {
    let c = BrokerConfig::default();
    assert_eq!(c.listen, "127.0.0.1:7420".parse().unwrap());
    assert_eq!(c.data_dir, Path::new("./sluice-data"));
    assert_eq!(
        c.tls,
        TlsConfig {
            cert: None,
            key: None
        }
    );
    assert!(c.auth.tokens.is_empty());
    assert!(!c.auth.allow_anonymous);
    assert_eq!(
        c.limits,
        LimitsConfig {
            max_connections: 1024,
            max_streams_per_connection: 256,
            max_frame_bytes: 16 * 1024 * 1024,
            max_message_bytes: 8 * 1024 * 1024,
            max_in_flight_per_connection: 4096,
            idle_timeout_ms: 30_000,
        }
    );
    assert_eq!(c.topic_defaults.partitions, 1);
    assert_eq!(c.topic_defaults.durability, "sync");
    c.validate().unwrap();
    assert_eq!(BrokerConfig::from_toml_str("").unwrap(), c);
    assert_eq!(
        BrokerConfig::load(None, &ConfigOverrides::default()).unwrap(),
        c
    );
}

#[test]
fn file_values_override_defaults() {
    let c = BrokerConfig::from_toml_str(
        r#"
        listen = "0.0.0.0:9000"
        [auth]
        tokens = ["a", "b"]
        [limits]
        max_connections = 10
        idle_timeout_ms = 5
        [topic_defaults]
        durability = "interval:50"
        "#,
    )
    .unwrap();
    let mut expected = BrokerConfig {
        listen: "0.0.0.0:9000".parse().unwrap(),
        ..BrokerConfig::default()
    };
    expected.auth.tokens = vec!["a".into(), "b".into()];
    expected.limits.max_connections = 10;
    expected.limits.idle_timeout_ms = 5;
    expected.topic_defaults.durability = "interval:50".into();
    // Keys the file leaves out, including the rest of a table it has,
    // keep their defaults.
    assert_eq!(c, expected);
}

#[test]
fn overrides_beat_file() {
    let file = write_file(
        r#"
        listen = "0.0.0.0:9000"
        data_dir = "/var/lib/sluice"
        [auth]
        tokens = ["from-file"]
        allow_anonymous = true
        [limits]
        max_connections = 10
        max_message_bytes = 1000
        [topic_defaults]
        partitions = 3
        durability = "none"
        "#,
    );
    let overrides = ConfigOverrides {
        listen: Some("10.0.0.1:1".parse().unwrap()),
        data_dir: Some("/data".into()),
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        tokens: Some(vec!["x".into(), "y".into()]),
        allow_anonymous: Some(false),
        max_connections: Some(20),
        max_message_bytes: Some(2000),
        default_partitions: Some(4),
        default_durability: Some("sync".into()),
    };
    let c = BrokerConfig::load(Some(file.path()), &overrides).unwrap();
    assert_eq!(c.listen, "10.0.0.1:1".parse().unwrap());
    assert_eq!(c.data_dir, Path::new("/data"));
    assert_eq!(c.tls.cert.as_deref(), Some(Path::new("c.pem")));
    assert_eq!(c.tls.key.as_deref(), Some(Path::new("k.pem")));
    assert_eq!(
        c.auth.tokens,
        ["x", "y"],
        "the list is replaced, not extended"
    );
    assert!(!c.auth.allow_anonymous);
    assert_eq!(c.limits.max_connections, 20);
    assert_eq!(c.limits.max_message_bytes, 2000);
    assert_eq!(c.topic_defaults.partitions, 4);
    assert_eq!(c.topic_defaults.durability, "sync");

    // Overrides not given leave the file's values.
    let c = BrokerConfig::load(Some(file.path()), &ConfigOverrides::default()).unwrap();
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.data_dir, Path::new("/var/lib/sluice"));
    assert_eq!(c.auth.tokens, ["from-file"]);
    assert!(c.auth.allow_anonymous);
    assert_eq!(c.limits.max_connections, 10);
    assert_eq!(c.limits.max_message_bytes, 1000);
    assert_eq!(c.topic_defaults.partitions, 3);
    assert_eq!(c.topic_defaults.durability, "none");
}

#[test]
fn flags_parse_into_overrides() {
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        overrides: ConfigOverrides,
    }
    Cli::command().debug_assert();

    let cli = Cli::try_parse_from([
        "sluice",
        "--listen",
        "0.0.0.0:9000",
        "--tokens",
        "a,b",
        "--allow-anonymous",
        "false",
        "--max-message-bytes",
        "1024",
        "--default-durability",
        "interval:5",
    ])
    .unwrap();
    let o = cli.overrides;
    assert_eq!(o.listen, Some("0.0.0.0:9000".parse().unwrap()));
    assert_eq!(o.tokens, Some(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(o.allow_anonymous, Some(false));
    assert_eq!(o.max_message_bytes, Some(1024));
    assert_eq!(o.default_durability.as_deref(), Some("interval:5"));

    // The bare flag means true.
    let cli = Cli::try_parse_from(["sluice", "--allow-anonymous"]).unwrap();
    assert_eq!(cli.overrides.allow_anonymous, Some(true));

    let err = Cli::try_parse_from(["sluice", "--listen", "localhost"]).unwrap_err();
    assert!(err.to_string().contains("--listen"), "{err}");
}

#[test]
fn unknown_key_names_the_key_and_the_file() {
    let err = BrokerConfig::from_toml_str("lisen = \"0.0.0.0:1\"").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("lisen"), "{err}");

    let file = write_file("[limits]\nmax_conections = 5\n");
    let err = BrokerConfig::load(Some(file.path()), &ConfigOverrides::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("max_conections"), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let err = BrokerConfig::from_toml_str("[tsl]\ncert = \"c\"\n").unwrap_err();
    assert!(err.to_string().contains("tsl"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let err = BrokerConfig::from_toml_str("[topic_defaults]\npartitions = \"two\"\n").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("partitions"), "{message}");
    assert!(message.contains("line 2"), "{message}");

    let err = BrokerConfig::from_toml_str("listen = \"localhost:7420\"").unwrap_err();
    assert!(err.to_string().contains("listen"), "{err}");
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = BrokerConfig::load(Some(&path), &ConfigOverrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.toml"), "{err}");
}

#[test]
fn bad_durability_is_a_clear_error() {
    let mut c = BrokerConfig::default();
    c.topic_defaults.durability = "fast".into();
    let message = invalid_message(c.validate());
    assert!(message.contains("topic_defaults.durability"), "{message}");
    assert!(message.contains("\"fast\""), "{message}");
    assert!(message.contains("sync, none or interval:<ms>"), "{message}");

    c.topic_defaults.durability = "interval:0".into();
    let message = invalid_message(c.validate());
    assert!(message.contains("topic_defaults.durability"), "{message}");

    for ok in ["sync", "none", "interval:5"] {
        c.topic_defaults.durability = ok.into();
        c.validate().unwrap();
    }

    // From a file: says so; from an override: names the flag and variable.
    let file = write_file("[topic_defaults]\ndurability = \"fast\"\n");
    let message = invalid_message(
        BrokerConfig::load(Some(file.path()), &ConfigOverrides::default()).map(drop),
    );
    assert!(message.contains("\"fast\""), "{message}");
    assert!(
        message.contains(&format!("set in {}", file.path().display())),
        "{message}"
    );
    let overrides = ConfigOverrides {
        default_durability: Some("slow".into()),
        ..ConfigOverrides::default()
    };
    let message = invalid_message(BrokerConfig::load(Some(file.path()), &overrides).map(drop));
    assert!(message.contains("\"slow\""), "{message}");
    assert!(
        message.contains("--default-durability / SLUICE_DEFAULT_DURABILITY"),
        "{message}"
    );
}

#[test]
fn tls_half_configured_is_an_error() {
    let mut c = BrokerConfig::default();
    c.tls.cert = Some("cert.pem".into());
    let message = invalid_message(c.validate());
    assert!(
        message.contains("tls.cert is set but tls.key is not"),
        "{message}"
    );

    c.tls = TlsConfig {
        cert: None,
        key: Some("key.pem".into()),
    };
    let message = invalid_message(c.validate());
    assert!(
        message.contains("tls.key is set but tls.cert is not"),
        "{message}"
    );

    c.tls.cert = Some("cert.pem".into());
    c.validate().unwrap();

    let overrides = ConfigOverrides {
        tls_cert: Some("cert.pem".into()),
        ..ConfigOverrides::default()
    };
    let message = invalid_message(BrokerConfig::load(None, &overrides).map(drop));
    assert!(
        message.contains("--tls-cert / SLUICE_TLS_CERT"),
        "{message}"
    );
}

#[test]
fn limits_are_checked() {
    let zero: [fn(&mut LimitsConfig); 6] = [
        |l| l.max_connections = 0,
        |l| l.max_streams_per_connection = 0,
        |l| l.max_frame_bytes = 0,
        |l| l.max_message_bytes = 0,
        |l| l.max_in_flight_per_connection = 0,
        |l| l.idle_timeout_ms = 0,
    ];
    for (i, set) in zero.iter().enumerate() {
        let mut c = BrokerConfig::default();
        set(&mut c.limits);
        let message = invalid_message(c.validate());
        assert!(
            message.contains("must be greater than 0"),
            "case {i}: {message}"
        );
        assert!(message.contains("limits."), "case {i}: {message}");
    }

    let mut c = BrokerConfig::default();
    c.limits.max_frame_bytes = 1 << 20;
    c.limits.max_message_bytes = (1 << 20) - 1024;
    c.validate().unwrap();
    c.limits.max_message_bytes += 1;
    let message = invalid_message(c.validate());
    assert!(message.contains("limits.max_message_bytes"), "{message}");
    assert!(message.contains("limits.max_frame_bytes"), "{message}");

    // No overflow near the top of the range.
    c.limits.max_message_bytes = u32::MAX;
    c.limits.max_frame_bytes = u32::MAX;
    invalid_message(c.validate());

    // The error says where each key came from.
    let file = write_file("[limits]\nmax_frame_bytes = 4096\n");
    let overrides = ConfigOverrides {
        max_message_bytes: Some(4000),
        ..ConfigOverrides::default()
    };
    let message = invalid_message(BrokerConfig::load(Some(file.path()), &overrides).map(drop));
    assert!(
        message.contains("limits.max_message_bytes: set by --max-message-bytes"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "limits.max_frame_bytes: set in {}",
            file.path().display()
        )),
        "{message}"
    );
    let message = invalid_message(
        BrokerConfig::load(Some(file.path()), &ConfigOverrides::default()).map(drop),
    );
    assert!(
        message.contains("limits.max_message_bytes: the built-in default"),
        "{message}"
    );
}

#[test]
fn partitions_and_tokens_are_checked() {
    let mut c = BrokerConfig::default();
    c.topic_defaults.partitions = 0;
    let message = invalid_message(c.validate());
    assert!(message.contains("topic_defaults.partitions"), "{message}");
    c.topic_defaults.partitions = MAX_PARTITIONS + 1;
    invalid_message(c.validate());
    c.topic_defaults.partitions = MAX_PARTITIONS;
    c.validate().unwrap();

    let mut c = BrokerConfig::default();
    c.auth.tokens = vec!["a".into(), String::new()];
    let message = invalid_message(c.validate());
    assert!(message.contains("auth.tokens[1] is empty"), "{message}");

    let c = BrokerConfig {
        data_dir: PathBuf::new(),
        ..BrokerConfig::default()
    };
    let message = invalid_message(c.validate());
    assert!(message.contains("data_dir"), "{message}");
}

#[test]
fn serve_requires_auth_and_a_certificate() {
    serveable().validate_for_serve().unwrap();

    let mut c = serveable();
    c.auth.tokens.clear();
    let message = invalid_message(c.validate_for_serve());
    assert!(
        message.contains("serve requires auth.tokens (or auth.allow_anonymous = true)"),
        "{message}"
    );
    c.auth.allow_anonymous = true;
    c.validate_for_serve().unwrap();

    let mut c = serveable();
    c.tls = TlsConfig::default();
    let message = invalid_message(c.validate_for_serve());
    assert!(message.contains("tls.cert and tls.key"), "{message}");

    // The defaults are for development, not for serve.
    invalid_message(BrokerConfig::default().validate_for_serve());
    // And serve checks everything validate checks.
    let mut c = serveable();
    c.topic_defaults.durability = "fast".into();
    invalid_message(c.validate_for_serve());
}

#[test]
fn accepts_token_cases() {
    let mut c = BrokerConfig::default();
    assert!(!c.accepts_token(""), "no anonymous access by default");
    assert!(!c.accepts_token("anything"), "no tokens accepts nothing");

    c.auth.tokens = vec!["alpha".into(), "bravo-2".into()];
    assert!(c.accepts_token("alpha"));
    assert!(c.accepts_token("bravo-2"));
    assert!(!c.accepts_token(""));
    for wrong in [
        "alph", "alphaa", "Alpha", "bravo-", "bravo-3", "alpha\0", "xalpha",
    ] {
        assert!(!c.accepts_token(wrong), "{wrong:?}");
    }

    c.auth.allow_anonymous = true;
    assert!(c.accepts_token(""));
    assert!(c.accepts_token("alpha"));
    assert!(
        !c.accepts_token("wrong"),
        "anonymous access does not admit wrong tokens"
    );

    assert!(constant_time_eq(b"", b""));
    assert!(!constant_time_eq(b"a", b""));
    assert!(!constant_time_eq(b"", b"a"));
}

#[test]
fn debug_does_not_print_tokens() {
    let c = serveable();
    let printed = format!("{c:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("1 token(s) redacted"), "{printed}");

    let o = ConfigOverrides {
        tokens: Some(vec!["s3cret".into()]),
        ..ConfigOverrides::default()
    };
    let printed = format!("{o:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
}

#[test]
fn example_toml_parses_back_to_the_defaults() {
    let example = BrokerConfig::example_toml();
    assert_eq!(
        BrokerConfig::from_toml_str(example).unwrap(),
        BrokerConfig::default()
    );

    // Every key appears in it, commented or not, with its section.
    let mut tls = BrokerConfig::default();
    tls.tls.cert = Some("c".into());
    tls.tls.key = Some("k".into());
    let table = toml::Table::try_from(&tls).unwrap();
    let mut keys = 0;
    for (key, value) in &table {
        match value {
            toml::Value::Table(inner) => {
                assert!(example.contains(&format!("\n[{key}]\n")), "[{key}] missing");
                for inner_key in inner.keys() {
                    assert!(
                        example.contains(&format!("\n{inner_key} = "))
                            || example.contains(&format!("\n# {inner_key} = ")),
                        "{key}.{inner_key} missing"
                    );
                    keys += 1;
                }
            }
            _ => {
                assert!(example.contains(&format!("\n{key} = ")), "{key} missing");
                keys += 1;
            }
        }
    }
    assert_eq!(keys, 15);
}

#[test]
fn docs_show_the_example() {
    let docs = include_str!("../../../docs/operations.md");
    assert!(
        docs.contains(BrokerConfig::example_toml()),
        "docs/operations.md must contain BrokerConfig::example_toml() verbatim"
    );
}

#[test]
fn serializes_and_parses_back() {
    let mut c = serveable();
    c.limits.idle_timeout_ms = 1;
    c.topic_defaults.durability = "interval:7".into();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(BrokerConfig::from_toml_str(&text).unwrap(), c);
}
