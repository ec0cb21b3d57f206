#!/usr/bin/env bash
# The one command that runs every test (`make test`): installs and starts the AWS-API emulator
# (moto server, from PyPI, into .venv), then runs formatting and lint checks, the Rust suites
# (unit, contract, API, pipeline) against it, and the template checks. Stops the emulator after.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

infra/emulator.sh start
trap 'infra/emulator.sh stop' EXIT
eval "$(infra/emulator.sh env)"
export REQUIRE_EMULATOR=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo build --workspace --bins --quiet
cargo test --workspace --no-fail-fast 2>&1 | tee "$root/.emulator/cargo-test.log"
if [ -f template.yaml ]; then
  echo "== cfn-lint template.yaml"
  .venv/bin/cfn-lint template.yaml
  echo "== template and code agree"
  ./target/debug/webhooks-local resources > .emulator/resources.json
  .venv/bin/python infra/check_template.py .emulator/resources.json
fi
