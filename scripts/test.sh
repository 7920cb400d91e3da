#!/usr/bin/env bash
# Runs everything CI checks: formatting, clippy (warnings are errors) and the
# whole test suite, including the crash tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
