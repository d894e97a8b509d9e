#!/usr/bin/env bash
# The project's test command: installs test tools, then fmt, clippy and all tests.
# Extra arguments are passed to `cargo test` (e.g. `scripts/test.sh --test mirror_auth`).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

bash scripts/install-test-deps.sh

export ODTR_TERRAFORM="$REPO_ROOT/.tools/terraform-1.0.3/terraform"

echo "==> cargo fmt --all -- --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo deny check bans licenses sources"
cargo deny --log-level warn check bans licenses sources
echo "==> cargo test $*"
cargo test "$@"
