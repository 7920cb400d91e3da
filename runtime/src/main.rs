//! The `sluice` binary; see `sluice --help`.

fn main() -> anyhow::Result<()> {
    sluice_runtime::cli::main()
}
