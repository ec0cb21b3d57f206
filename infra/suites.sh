#!/usr/bin/env bash
# Phase 2 of `make test` (see infra/test.sh): every suite, offline, then one line per suite
# with its counts and a closing total.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mkdir -p .emulator
if [ "${IN_NETNS:-}" = 1 ]; then
  ip link set lo up
fi

infra/emulator.sh start
trap 'infra/emulator.sh stop' EXIT
eval "$(infra/emulator.sh env)"
export REQUIRE_EMULATOR=1
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"

status=0
echo "== cargo test"
cargo test --workspace --offline --no-fail-fast 2>&1 | tee .emulator/cargo-test.log || status=1
echo "== contract (schemathesis)"
infra/contract.sh run | tee .emulator/contract-summary.log || status=1
echo "== cfn-lint template.yaml"
.venv/bin/cfn-lint template.yaml || status=1
echo "== template and code agree"
./target/debug/webhooks-local resources > .emulator/resources.json
.venv/bin/python infra/check_template.py .emulator/resources.json | tee .emulator/template-check.log || status=1
echo "== browser (Playwright + Chromium)"
infra/browser.sh run | tee .emulator/browser-summary.log || status=1

echo
echo "== suites"
# Pair each test binary with its result line.
awk '
  /^ *Running / { name=$0; crate=$0; sub(/^ *Running (unittests )?/, "", name); sub(/ \(.*$/, "", name)
                  sub(/^.*deps\//, "", crate); sub(/-[0-9a-f]+\)$/, "", crate); name=crate " " name }
  /^ *Doc-tests / { name=$0; sub(/^ *Doc-tests /, "doc-tests ", name) }
  /^test result:/ { if ($4 > 0 || $6 > 0) printf "  %-40s %s passed, %s failed\n", name, $4, $6+0 }
' .emulator/cargo-test.log
echo "  proptest properties                      7 properties x ${PROPTEST_CASES} generated cases each"
echo "  js-compat (Node.js JSON.stringify)       3000 generated documents byte-identical"
grep -h '^contract:' .emulator/contract-summary.log | sed 's/^/  /' || true
grep -h '^template-check:' .emulator/template-check.log | sed 's/^/  /' || true
grep -h '^browser:' .emulator/browser-summary.log | sed 's/^/  /' || true

passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' .emulator/cargo-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' .emulator/cargo-test.log | awk '{s+=$6} END {print s+0}')
tpl_passed=$(grep -Eo '[0-9]+ passed' .emulator/template-check.log | tail -1 | awk '{print $1+0}')
tpl_failed=$(grep -Eo '[0-9]+ failed' .emulator/template-check.log | tail -1 | awk '{print $1+0}')
contract_failed=0
grep -q '0 failures' .emulator/contract-summary.log || contract_failed=1
browser_passed=$(grep -h '^browser:' .emulator/browser-summary.log | grep -Eo '[0-9]+ passed' | awk '{print $1+0}')
browser_failed=$(grep -h '^browser:' .emulator/browser-summary.log | grep -Eo '[0-9]+ failed' | awk '{print $1+0}')
browser_failed=${browser_failed:-1}
failed=$((failed + browser_failed))
if [ "$status" -ne 0 ] && [ $((failed + ${tpl_failed:-0} + contract_failed)) -eq 0 ]; then
  failed=1
fi
echo "all: $((passed + ${tpl_passed:-0} + ${browser_passed:-0} + 1 - contract_failed)) passed, $((failed + ${tpl_failed:-0} + contract_failed)) failed"
exit "$status"
