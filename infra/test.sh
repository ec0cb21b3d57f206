#!/usr/bin/env bash
# The one command that runs every test (`make test`): installs and starts the AWS-API emulator
# (moto server, from PyPI, into .venv), then runs formatting and lint checks, the Rust suites
# (unit, contract, API, pipeline) against it, and the template checks. Stops the emulator after.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

# The pipeline suite runs the guide's Node.js receiver.
if ! command -v node >/dev/null 2>&1; then
  echo "== installing nodejs (Debian)"
  apt-get update -qq && apt-get install -y -qq nodejs >/dev/null
fi

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
  .venv/bin/python infra/check_template.py .emulator/resources.json | tee .emulator/template-check.log
fi

# One closing line with the totals of every suite above.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' .emulator/cargo-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' .emulator/cargo-test.log | awk '{s+=$1} END {print s+0}')
tpl_passed=0
tpl_failed=0
if [ -f .emulator/template-check.log ]; then
  tpl_passed=$(grep -Eo '[0-9]+ passed' .emulator/template-check.log | tail -1 | awk '{print $1}')
  tpl_failed=$(grep -Eo '[0-9]+ failed' .emulator/template-check.log | tail -1 | awk '{print $1}')
fi
echo "all: $((passed + tpl_passed)) passed, $((failed + tpl_failed)) failed"
