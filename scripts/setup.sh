#!/usr/bin/env bash
# Installs what building Sluice needs, only if it is missing (idempotent).
# Sourced by scripts/dev.sh and scripts/test.sh.
set -euo pipefail

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; return 1; fi
}

# RocksDB's Rust bindings are generated with libclang.
if [ -z "${LIBCLANG_PATH:-}" ] && ! dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q "ok installed"; then
  echo "setup: installing libclang-dev (for RocksDB's bindings)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq libclang-dev >/dev/null
fi

# The toolchain pinned in rust-toolchain.toml, with the components we use.
# (rustup does not fetch them on its own when RUSTUP_AUTO_INSTALL=0.)
if command -v rustup >/dev/null; then
  toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")
  installed=$(rustup component list --installed --toolchain "$toolchain" 2>/dev/null || true)
  for c in rustfmt clippy; do
    if ! grep -q "^$c" <<<"$installed"; then
      echo "setup: adding rustup component $c" >&2
      rustup component add --toolchain "$toolchain" "$c"
    fi
  done
  # Functions are WebAssembly components: sample-functions/components builds
  # the guests for wasm32-wasip2.
  if ! rustup target list --installed --toolchain "$toolchain" 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding rustup target wasm32-wasip2" >&2
    rustup target add --toolchain "$toolchain" wasm32-wasip2
  fi
fi
