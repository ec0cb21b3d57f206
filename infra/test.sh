#!/usr/bin/env bash
# The one command that runs every test (`make test`).
#
# Phase 1 (with the network, for package registries): install moto server, cfn-lint,
# schemathesis, standardwebhooks and LocalStack (pinned, Python 3.13) from PyPI into .venv*, Node.js from Debian
# if missing, the browser suite's Chromium (Debian), Playwright (PyPI) and axe-core (npm);
# cargo fmt --check, clippy -D warnings, and build every binary and test.
# Phase 2 (infra/suites.sh) runs inside a fresh network namespace with only 127.0.0.1, so no
# test can send anything off this machine, whatever URL a generated input names: the
# emulators (moto; LocalStack for SQS), the Rust suites, the contract run, the template
# checks and the browser suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_apt=()
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (Debian)"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
infra/emulator.sh install
infra/contract.sh install
infra/browser.sh install
infra/localstack.sh install
# The official Standard Webhooks verifiers (PyPI and npm, one venv shared with the secret-rotation
# tests' tests/python/standard_verify.py) for tests/tests/first_hour.rs and pipeline.rs.
infra/standardwebhooks.sh install

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build"
# The README quick start's build (no AWS SDK) first, so that phase 2's run of it compiles
# nothing; then the full build, whose webhooks-local the suites spawn.
cargo build -p webhooks-local --no-default-features --quiet
cargo build --workspace --bins --quiet
cargo test --workspace --no-run --quiet 2>/dev/null || cargo test --workspace --no-run

if unshare --net true 2>/dev/null; then
  exec unshare --net env IN_NETNS=1 infra/suites.sh
fi
echo "warning: cannot create a network namespace here; running the suites on the host network" >&2
exec infra/suites.sh
