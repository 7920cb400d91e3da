//! `sluice bench`: programs that measure the broker and print the figures.
//!
//! Benchmarks are programs, not tests: they run against the real code on the
//! real disk and print tables an operator can compare between machines and
//! commits. Because the machines they run on are shared and noisy, every
//! figure is the median of several repetitions, and every target is stated as
//! a ratio between two things measured in the same run (for example the log's
//! append bandwidth against what a `dd`-like sequential write achieves a few
//! seconds earlier), never as an absolute number.
//!
//! - [`log`]: `sluice bench log`, the storage engine — append throughput per
//!   durability policy, group commit, reads, recovery time.
//! - [`quic`]: `sluice bench producer|consumer|e2e`, the broker over QUIC as
//!   clients see it — msgs/s, MB/s and latency percentiles.
//! - [`group`]: `sluice bench group`, consumer groups — per-message-ack
//!   consumption against plain fetch, push latency end to end.
//! - [`function`]: `sluice bench fn`, functions in the broker — a tag
//!   filter function's cost on group consumption, handler msgs/s,
//!   transform MB/s.
//! - [`sched`]: `sluice bench sched`, the scheduler — schedule rate,
//!   lateness with a million pending, a burst due in one second, restart.
//!
//! Tables go to stdout, progress bars to stderr, and `--json` writes every
//! figure for scripts. MB means 10^6 bytes, as `dd` reports it.

#[cfg(feature = "demo")]
pub mod function;
pub mod group;
pub mod log;
pub mod quic;
pub mod sched;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

/// `sluice bench <program>`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmark programs.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The partitioned log: appends per durability policy, group commit,
    /// reads and recovery.
    Log(log::LogBenchArgs),
    /// Producers over QUIC: batches sent and durably acknowledged.
    Producer(quic::QuicBenchArgs),
    /// Consumers over QUIC reading a filled topic.
    Consumer(quic::QuicBenchArgs),
    /// Produce and consume at once: send-to-receive latency.
    E2e(quic::QuicBenchArgs),
    /// Consumer groups: per-message-ack consumption with 1, 2 and 4
    /// members against plain fetch, and push latency end to end.
    Group(Box<group::GroupBenchArgs>),
    /// Functions in the broker: group consumption with and without a tag
    /// filter function, handler msgs/s, transform MB/s (needs the sample
    /// functions: built with the `demo` feature, the default).
    #[cfg(feature = "demo")]
    Fn(Box<function::FnBenchArgs>),
    /// The scheduler: schedule rate, lateness with a backlog, a burst due
    /// in one second, restart with a backlog.
    Sched(sched::SchedBenchArgs),
}

/// Runs the chosen benchmark program.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Log(args) => log::run(args),
        BenchCommand::Producer(args) => quic::run(quic::Scenario::Producer, args),
        BenchCommand::Consumer(args) => quic::run(quic::Scenario::Consumer, args),
        BenchCommand::E2e(args) => quic::run(quic::Scenario::E2e, args),
        BenchCommand::Sched(args) => sched::run(args),
        BenchCommand::Group(args) => group::run(*args),
        #[cfg(feature = "demo")]
        BenchCommand::Fn(args) => function::run(*args),
    }
}

/// Bytes in the "MB" of every MB/s figure (the `dd` convention).
pub(crate) const MB: f64 = 1e6;

/// Calls `op` back to back until `duration` has passed and returns how many
/// calls completed and how long they took (a little over `duration`: the last
/// call is allowed to finish). Reading the clock after each call costs tens
/// of nanoseconds, small next to the operations measured.
pub(crate) fn run_for(
    duration: Duration,
    mut op: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration)> {
    let start = Instant::now();
    let mut calls = 0;
    loop {
        op()?;
        calls += 1;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok((calls, elapsed));
        }
    }
}

/// The median of repeated measurements: unlike the mean, one repetition
/// disturbed by a neighbour on a shared machine does not move it.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// `1234567.8` as `1,234,568`: rates span six orders of magnitude, and
/// grouped digits keep the columns readable.
pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = (value.round().abs() as u128).to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < -0.5 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "met" or "MISSED", for target lines.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// A progress bar on stderr (hidden when stderr is not a terminal), so a
/// long run shows where it is without mixing with the tables on stdout.
pub(crate) fn progress(len: u64, prefix: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
        .expect("valid progress template")
        .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(prefix.to_string())
}

/// A table printed with aligned columns: the first column left-aligned (a
/// label), the others right-aligned (numbers).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                match i {
                    0 => write!(f, "{cell:<width$}")?,
                    _ => write!(f, "  {cell:>width$}")?,
                }
            }
            writeln!(f)
        };
        line(f, &self.header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// The scratch directory of one benchmark run, `<parent>/run-<pid>-<ms>`.
/// It is removed when dropped (also when the run fails), and so is `parent`
/// if this run created it and left it empty: repeated runs must not fill the
/// disk, and nothing the benchmark did not create is ever deleted.
#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    created_parent: Option<PathBuf>,
}

impl WorkDir {
    pub(crate) fn new(parent: &Path) -> anyhow::Result<Self> {
        let created_parent = (!parent.exists()).then(|| parent.to_path_buf());
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let path = parent.join(format!("run-{}-{stamp}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir {
            path,
            created_parent,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// An empty subdirectory `name`, emptied first if an earlier measurement
    /// left it behind.
    pub(crate) fn fresh(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.path.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
        if let Some(parent) = &self.created_parent {
            // Fails, harmlessly, when another run still uses it.
            let _ = fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["name", "n"]);
        t.row(vec!["a".into(), "1,000".into()]);
        assert_eq!(t.to_string(), "name      n\n----  -----\na     1,000\n");
    }
}
