#!/usr/bin/env bash
# Starts a Sluice broker on embedded defaults (data in ./sluice-data).
# Extra arguments go to `sluice dev` (see `sluice dev --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --quiet -p sluice-runtime --bin sluice -- dev "$@"
