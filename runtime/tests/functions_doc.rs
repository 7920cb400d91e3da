//! The walk-through of docs/functions.md, run for real: from `cargo new` to
//! a deployed, upgraded, rolled back and deleted filter.
//!
//! The test reads the doc's marked fenced blocks in order and does what a
//! reader would:
//!
//! - ```` ```sh walkthrough ````: each line is a command (`cargo ...` or
//!   `cd DIR`; `#` starts a comment);
//! - ```` ```toml file=Cargo.toml ```` (any language, `file=PATH`): writes
//!   the block to PATH in the current directory (the `sluice-guest` path
//!   dependency is pointed at this checkout's guest-sdk);
//! - ```` ```console walkthrough ````: `$ `-lines are commands, the lines
//!   after each are its output. `sluice dev` is the reader's broker in
//!   another terminal: the test's own broker stands in for it. Every other
//!   `sluice` command runs the real binary against that broker, in the
//!   crate's directory, must succeed, and must print the output shown,
//!   compared after [`normalize`] (digests, times, sizes, latencies and
//!   fuel differ from run to run).
//!
//! The crate is built with the doc's own `cargo build` line, into a target
//! directory shared by all runs (`<target>/doc-guests`), so only the first
//! run compiles the guest SDK's dependencies. Without the `wasm32-wasip2`
//! target the test is skipped, saying so.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, describe};

const TARGET: &str = "wasm32-wasip2";
/// Longest a `sluice` command of the walk-through may take (a group
/// consume that waits for more messages than the filter lets through
/// would wait forever).
const SLUICE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a `cargo` command may take (the first build compiles the
/// guest SDK and its dependencies).
const CARGO_TIMEOUT: Duration = Duration::from_secs(900);

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/functions.md")
}

/// What a marked block asks for.
#[derive(Debug)]
enum Step {
    /// A `sh walkthrough` block: one command per line.
    Shell(Vec<Vec<String>>),
    /// A `file=PATH` block.
    File { path: String, text: String },
    /// A `console walkthrough` block: commands and the output shown.
    Console(Vec<Shown>),
}

/// One `$ ` command of a console block and the lines shown after it.
#[derive(Debug)]
struct Shown {
    /// 1-based line of the doc, for messages.
    line: usize,
    words: Vec<String>,
    output: Vec<String>,
}

/// The marked fenced blocks of `doc`, in order.
fn steps(doc: &str) -> Vec<(usize, Step)> {
    let mut out = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut body = Vec::new();
        for (j, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                break;
            }
            body.push((j + 1, l));
        }
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let mut walkthrough = false;
        let mut file = None;
        for w in words {
            match w.split_once('=') {
                None if w == "walkthrough" => walkthrough = true,
                Some(("file", path)) => file = Some(path.to_owned()),
                _ => panic!(
                    "docs/functions.md:{}: unknown fence attribute {w:?} (this test knows `walkthrough` and `file=PATH`)",
                    i + 1
                ),
            }
        }
        let step = match (walkthrough, file) {
            (false, None) => continue,
            (true, Some(_)) => panic!(
                "docs/functions.md:{}: a block is either `walkthrough` or `file=PATH`",
                i + 1
            ),
            (false, Some(path)) => Step::File {
                path,
                text: body.iter().map(|(_, l)| format!("{l}\n")).collect(),
            },
            (true, None) if lang == "sh" => Step::Shell(
                joined(&body)
                    .into_iter()
                    .filter_map(|(n, l)| words_of(n, &l))
                    .collect(),
            ),
            (true, None) if lang == "console" => Step::Console(console(&body)),
            (true, None) => panic!(
                "docs/functions.md:{}: a walkthrough block must be `sh` or `console`, not {lang:?}",
                i + 1
            ),
        };
        out.push((i + 1, step));
    }
    out
}

/// Lines with a trailing `\` joined to the next.
fn joined(body: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut continued = false;
    for (n, l) in body {
        if continued {
            let last = out.last_mut().expect("a line to continue");
            last.1.push_str(l.trim_start());
        } else {
            out.push((*n, (*l).to_owned()));
        }
        let last = out.last_mut().expect("just pushed");
        continued = last.1.ends_with('\\');
        if continued {
            last.1.pop();
            last.1.push(' ');
        }
    }
    out
}

fn words_of(line: usize, text: &str) -> Option<Vec<String>> {
    let words =
        shell_words(text).unwrap_or_else(|e| panic!("docs/functions.md:{line}: {e}: {text}"));
    (!words.is_empty()).then_some(words)
}

fn console(body: &[(usize, &str)]) -> Vec<Shown> {
    let mut out: Vec<Shown> = Vec::new();
    for (n, l) in joined(body) {
        if let Some(command) = l.strip_prefix("$ ") {
            let words = words_of(n, command)
                .unwrap_or_else(|| panic!("docs/functions.md:{n}: an empty command"));
            out.push(Shown {
                line: n,
                words,
                output: Vec::new(),
            });
        } else if !l.trim().is_empty() {
            let Some(last) = out.last_mut() else {
                panic!("docs/functions.md:{n}: output before any `$ ` command: {l}");
            };
            last.output.push(l);
        }
    }
    out
}

/// Splits a command line into words as a POSIX shell would for the simple
/// commands the doc uses: blanks separate words, `'...'` and `"..."` quote
/// (with `\"`, `\\`, `` \` `` and `\$` inside double quotes), `\` escapes
/// one character, and `#` at the start of a word begins a comment. Shell
/// syntax this test cannot run (`$`, pipes, redirections, `;`, `&`,
/// backquotes, globs) is refused outside quotes.
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c @ ('$' | '`')) => {
                            return Err(format!("`{c}` inside double quotes is not supported"));
                        }
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a trailing backslash".into()),
                }
            }
            '$' | '`' | '|' | '&' | ';' | '<' | '>' | '(' | ')' | '*' | '?' | '[' | '~' => {
                return Err(format!(
                    "unquoted `{c}`: this test runs simple commands only (quote it)"
                ));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A line of output as compared: the parts that differ from run to run
/// replaced (RFC 3339 times, 12-hex-digit digests, durations like `155µs`
/// or `2.50s`, sizes like `75.0 KiB`, the number after `fuel`) and blanks
/// collapsed.
fn normalize(line: &str) -> String {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let (open, rest) = t.split_at(t.len() - t.trim_start_matches('(').len());
        let core = rest.trim_end_matches([',', ';', ')']);
        let close = &rest[core.len()..];
        let replaced = if is_time(core) {
            Some("<time>")
        } else if is_digest(core) {
            Some("<digest>")
        } else if is_duration(core) {
            Some("<duration>")
        } else if is_number(core)
            && close.is_empty()
            && tokens.get(i + 1).is_some_and(|u| {
                ["B", "KiB", "MiB", "GiB"].contains(&u.trim_end_matches([',', ';']))
            })
        {
            // `75.0 KiB`: the unit goes too (its punctuation stays).
            i += 1;
            let unit = tokens[i];
            out.push(format!(
                "<size>{}",
                &unit[unit.trim_end_matches([',', ';']).len()..]
            ));
            i += 1;
            continue;
        } else if is_number(core) && i > 0 && tokens[i - 1] == "fuel" {
            Some("<fuel>")
        } else {
            None
        };
        out.push(match replaced {
            Some(r) => format!("{open}{r}{close}"),
            None => t.to_owned(),
        });
        i += 1;
    }
    out.join(" ")
}

fn is_number(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && parts
            .next()
            .is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

fn is_duration(s: &str) -> bool {
    ["µs", "ms", "s"]
        .iter()
        .any(|u| s.strip_suffix(u).is_some_and(is_number))
}

fn is_digest(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `2026-03-01T09:00:00.250Z`.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
        && s[..s.len() - 1]
            .bytes()
            .all(|c| c.is_ascii_digit() || b"-T:.".contains(&c))
}

/// The outer build's target directory: the ancestor of this test binary
/// that cargo marked with CACHEDIR.TAG (else CARGO_TARGET_DIR, else a temp
/// directory).
fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file())
    {
        return dir.to_path_buf();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-doc-target"))
}

fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Whether the standard library for wasm32-wasip2 is installed (for the
/// toolchain this test runs under: rustup passes RUSTUP_TOOLCHAIN on).
fn target_installed() -> bool {
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

/// A nested cargo without what the outer `cargo test` set for this test
/// (its package's variables would mislead the guest's build scripts).
fn cargo(args: &[String], dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_BUILD_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "OUT_DIR",
        "CARGO_TARGET_TMPDIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
            "CARGO_FEATURE_",
            "DEP_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    cmd
}

/// Runs `cmd`, killing it after `timeout`.
fn run_for(cmd: &mut Command, timeout: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out.join().unwrap(), err.join().unwrap());
            panic!(
                "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Points the `sluice-guest` path dependency at this checkout.
fn with_local_sdk(cargo_toml: &str) -> String {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let sdk = sdk
        .canonicalize()
        .expect("the guest SDK is in the checkout");
    let mut found = false;
    let text = cargo_toml
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("sluice-guest")
                && let Some(start) = l.find("path = \"")
                && let Some(len) = l[start + 8..].find('"')
            {
                found = true;
                let end = start + 8 + len;
                format!("{}{}{}", &l[..start + 8], sdk.display(), &l[end..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        found,
        "the doc's Cargo.toml has no `sluice-guest = {{ path = \"...\" }}` dependency to point at this checkout:\n{cargo_toml}"
    );
    text + "\n"
}

/// The state of the walk-through: where the reader is, and their broker.
struct Reader {
    dir: PathBuf,
    shared_target: PathBuf,
    broker: Option<Broker>,
    /// Every `sluice` command run, with its stdout.
    ran: Vec<(Vec<String>, String)>,
}

impl Reader {
    fn cd(&mut self, words: &[String]) {
        assert_eq!(words.len(), 2, "cd takes one directory: {words:?}");
        self.dir = self.dir.join(&words[1]);
        assert!(self.dir.is_dir(), "cd: no directory {}", self.dir.display());
    }

    fn cargo(&mut self, words: &[String]) {
        let args = &words[1..];
        let building = args.first().is_some_and(|a| a == "build");
        if building && !self.dir.join("Cargo.lock").exists() {
            // The workspace's versions: no registry resolution, and the
            // same dependencies the SDK is tested with.
            let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
            std::fs::copy(lock, self.dir.join("Cargo.lock")).unwrap();
        }
        let started = Instant::now();
        let out = run_for(
            &mut cargo(args, &self.dir, &self.shared_target),
            CARGO_TIMEOUT,
            &words.join(" "),
        );
        assert!(
            out.status.success(),
            "`{}` failed in {}\n{}",
            words.join(" "),
            self.dir.display(),
            describe(&out)
        );
        eprintln!("{} ({:.1?})", words.join(" "), started.elapsed());
        if building {
            self.place_artifacts(args);
        }
    }

    /// Copies the component the build made in the shared target directory
    /// to where the doc says it is (`./target/...`). Only this crate's:
    /// components of earlier runs stay behind.
    fn place_artifacts(&self, args: &[String]) {
        let mut triple = None;
        let mut profile = "debug";
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--release" => profile = "release",
                "--target" => triple = it.next().cloned(),
                _ => {
                    if let Some(t) = a.strip_prefix("--target=") {
                        triple = Some(t.to_owned());
                    }
                }
            }
        }
        let manifest = std::fs::read_to_string(self.dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = toml::from_str(&manifest).unwrap();
        let lib = manifest
            .get("lib")
            .and_then(|l| l.get("name"))
            .or_else(|| manifest.get("package").and_then(|p| p.get("name")))
            .and_then(|n| n.as_str())
            .expect("Cargo.toml names the package")
            .replace('-', "_");
        let rel: PathBuf = [triple.as_deref().unwrap_or(""), profile].iter().collect();
        let file = format!("{lib}.wasm");
        let from = self.shared_target.join(&rel).join(&file);
        assert!(
            from.is_file(),
            "`cargo build {}` made no {}",
            args[1..].join(" "),
            from.display()
        );
        let to = self.dir.join("target").join(&rel);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(&from, to.join(&file)).unwrap();
    }

    fn sluice(&mut self, shown: &Shown) {
        let broker = self.broker.get_or_insert_with(Broker::start);
        let args: Vec<&str> = shown.words[1..].iter().map(String::as_str).collect();
        let mut cmd = broker.sluice(&args);
        // In the crate's directory, as the reader is; the broker's
        // certificate is not in ./sluice-data there.
        cmd.current_dir(&self.dir)
            .env("SLUICE_CA_CERT", &broker.cert);
        let line = shown.words.join(" ");
        let out = run_for(&mut cmd, SLUICE_TIMEOUT, &line);
        assert!(
            out.status.success(),
            "docs/functions.md:{}: `{line}` failed\n{}",
            shown.line,
            describe(&out)
        );
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        let actual: Vec<String> = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(normalize)
            .collect();
        let expected: Vec<String> = shown.output.iter().map(|l| normalize(l)).collect();
        assert_eq!(
            actual, expected,
            "docs/functions.md:{}: `{line}` printed something else than the doc shows \
             (compared after normalizing; left: printed, right: the doc)\nstdout:\n{stdout}",
            shown.line
        );
        self.ran.push((shown.words.clone(), stdout));
    }

    /// stdouts of the `sluice` commands starting with `prefix`, in order.
    fn outputs(&self, prefix: &[&str]) -> Vec<&str> {
        self.ran
            .iter()
            .filter(|(w, _)| w.len() > prefix.len() && w[1..=prefix.len()] == *prefix)
            .map(|(_, out)| out.as_str())
            .collect()
    }
}

#[test]
fn the_functions_walkthrough_works() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/functions.md");
    let steps = steps(&doc);
    assert!(
        steps.len() >= 6,
        "docs/functions.md has too few marked walk-through blocks: {steps:#?}"
    );
    if !target_installed() {
        eprintln!(
            "SKIPPED: the {TARGET} target is missing, so the doc's function cannot be built: \
             run `rustup target add {TARGET}` (scripts/setup.sh does this)"
        );
        return;
    }
    let started = Instant::now();
    let home = tempfile::tempdir().unwrap();
    let mut reader = Reader {
        dir: home.path().to_path_buf(),
        shared_target: target_dir().join("doc-guests"),
        broker: None,
        ran: Vec::new(),
    };
    for (line, step) in &steps {
        match step {
            Step::File { path, text } => {
                let text = if path == "Cargo.toml" {
                    with_local_sdk(text)
                } else {
                    text.clone()
                };
                let path = reader.dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, text).unwrap();
            }
            Step::Shell(commands) => {
                for words in commands {
                    match words[0].as_str() {
                        "cd" => reader.cd(words),
                        "cargo" => reader.cargo(words),
                        other => panic!(
                            "docs/functions.md:{line}: the walk-through runs `{other}`, which this test does not know how to run"
                        ),
                    }
                }
            }
            Step::Console(commands) => {
                for shown in commands {
                    match (
                        shown.words[0].as_str(),
                        shown.words.get(1).map(String::as_str),
                    ) {
                        // The reader's broker, in another terminal: the
                        // test's broker stands in for it.
                        ("sluice", Some("dev")) => {}
                        ("sluice", _) => reader.sluice(shown),
                        ("cd", _) => reader.cd(&shown.words),
                        ("cargo", _) => reader.cargo(&shown.words),
                        (other, _) => panic!(
                            "docs/functions.md:{}: the walk-through runs `{other}`, which this test does not know how to run",
                            shown.line
                        ),
                    }
                }
            }
        }
    }

    // The walk-through covers what it promises...
    let subcommands: BTreeSet<&str> = reader
        .ran
        .iter()
        .filter(|(w, _)| w[1] == "fn")
        .map(|(w, _)| w[2].as_str())
        .collect();
    for sub in ["deploy", "list", "describe", "logs", "rollback", "delete"] {
        assert!(
            subcommands.contains(sub),
            "the walk-through never runs `sluice fn {sub}`"
        );
    }
    assert!(
        reader
            .ran
            .iter()
            .any(|(w, _)| w[1] == "fn" && w.contains(&"--manifest".to_owned())),
        "the walk-through never deploys with --manifest"
    );

    // ...and its outputs say what the prose claims.
    let consumed = reader.outputs(&["group", "consume"]);
    assert!(consumed.len() >= 3, "three group consumes: {consumed:?}");
    let first: Vec<&str> = consumed[0].lines().collect();
    assert!(
        first.len() == 2 && first.iter().all(|l| l.contains("tags=urgent")),
        "the group gets only the urgent incidents: {first:?}"
    );
    assert!(
        consumed[1].contains("tags=sev1") && !consumed[1].contains("tags=urgent"),
        "version 2 keeps sev1: {}",
        consumed[1]
    );
    assert!(
        consumed[2].contains("tags=urgent") && !consumed[2].contains("tags=sev1"),
        "after the rollback, urgent again: {}",
        consumed[2]
    );
    let everything = reader.outputs(&["consume"]);
    assert_eq!(
        everything[0].lines().count(),
        4,
        "the topic keeps every message: {}",
        everything[0]
    );
    let described = reader.outputs(&["fn", "describe"]);
    assert!(
        described[0].starts_with("function urgent (filter), version 1 "),
        "{}",
        described[0]
    );
    let deployed = reader.outputs(&["fn", "deploy"]);
    assert!(
        deployed[1].starts_with("deployed urgent version 2 ")
            && deployed[1].trim_end().ends_with("replacing version 1"),
        "{}",
        deployed[1]
    );
    let rolled = reader.outputs(&["fn", "rollback"]);
    assert!(
        rolled[0].starts_with("rolled back urgent to version 1 ")
            && rolled[0].trim_end().ends_with("replacing version 2"),
        "{}",
        rolled[0]
    );
    assert!(
        described.last().unwrap().contains("config: tag=urgent"),
        "the manifest's config: {}",
        described.last().unwrap()
    );
    assert_eq!(
        reader.outputs(&["fn", "list"]).last().map(|s| s.trim()),
        Some("no functions")
    );
    eprintln!("walk-through done in {:.1?}", started.elapsed());
}

#[test]
fn shell_words_split_like_a_shell() {
    let w = |s: &str| shell_words(s).unwrap();
    assert_eq!(
        w(r#"sluice produce t --tag urgent "db primary down"  # comment"#),
        [
            "sluice",
            "produce",
            "t",
            "--tag",
            "urgent",
            "db primary down"
        ]
    );
    assert_eq!(
        w("a 'b c' d\\ e \"f\\\"g\" h#i"),
        ["a", "b c", "d e", "f\"g", "h#i"]
    );
    assert_eq!(w("'' x"), ["", "x"]);
    assert_eq!(w("   # only a comment"), Vec::<String>::new());
    assert_eq!(w("\"81% full\""), ["81% full"]);
    assert!(shell_words("echo $HOME").is_err());
    assert!(shell_words("a | b").is_err());
    assert!(shell_words("a > f").is_err());
    assert!(shell_words("'open").is_err());
}

#[test]
fn output_is_normalized_where_it_varies() {
    assert_eq!(
        normalize("deployed urgent version 2 (ad843b446559), replacing version 1"),
        "deployed urgent version 2 (<digest>), replacing version 1"
    );
    assert_eq!(
        normalize("1 (active)  ad843b446559  75.0 KiB  2026-03-01T09:00:00.781Z"),
        "1 (active) <digest> <size> <time>"
    );
    assert_eq!(
        normalize("latency p50 4µs, p99 1.5ms, max 2.50s; busy 171µs; fuel 14495"),
        "latency p50 <duration>, p99 <duration>, max <duration>; busy <duration>; fuel <fuel>"
    );
    assert_eq!(
        normalize("limits: timeout 100 ms, memory 16.0 MiB, fuel default"),
        "limits: timeout 100 ms, memory <size>, fuel default"
    );
    // Counts, offsets and versions are compared as they are.
    assert_eq!(
        normalize("0/3 tags=urgent,eu  eu-west latency 2s"),
        "0/3 tags=urgent,eu eu-west latency <duration>"
    );
    assert_ne!(normalize("invocations 4"), normalize("invocations 5"));
}

#[test]
fn the_doc_marks_its_walkthrough() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/functions.md");
    let steps = steps(&doc);
    let files: Vec<&str> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::File { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(files, ["Cargo.toml", "src/lib.rs", "urgent.toml"]);
    let shell: Vec<String> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Shell(c) => Some(c.iter().map(|w| w.join(" ")).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        shell,
        [
            "cargo new --lib urgent-filter",
            "cd urgent-filter",
            "cargo build --release --target wasm32-wasip2"
        ]
    );
}
