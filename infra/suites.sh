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

# Whatever ends this script (failure, Ctrl-C, a CI timeout's SIGTERM), no emulator outlives
# it: LocalStack would otherwise keep running inside the namespace.
trap 'infra/localstack.sh stop; infra/emulator.sh stop' EXIT
trap 'exit 130' INT TERM HUP
# And if this shell is SIGKILLed, LocalStack's watchdog ends it (infra/localstack.sh).
export LOCALSTACK_OWNER_PID=$$
infra/emulator.sh start
eval "$(infra/emulator.sh env)"
export REQUIRE_EMULATOR=1
# Where tests/tests/sqs_emulators.rs says what an emulator does differently or cannot do.
export EMULATOR_NOTES="$root/.emulator/emulator-notes.txt"
: >"$EMULATOR_NOTES"
export PROPTEST_CASES="${PROPTEST_CASES:-1000}"

status=0
echo "== cargo test"
cargo test --workspace --offline --no-fail-fast 2>&1 | tee .emulator/cargo-test.log || status=1

# The SQS suites again, with LocalStack serving SQS and moto DynamoDB, through the per-service
# endpoint variables only. "target [filter]" per entry; the queue contract joins when present.
# --workspace (not -p webhooks-tests) keeps the features, and so the binaries, of phase 1.
localstack_targets=("pipeline emulator::" "sqs_emulators")
[ -f tests/tests/queue_contract.rs ] && localstack_targets+=("queue_contract")
echo "== cargo test with LocalStack serving SQS, moto DynamoDB"
: >.emulator/cargo-test-localstack.log
ls_started=$(date +%s)
if infra/localstack.sh start 2>&1 | tee .emulator/localstack-start.log; then
  ls_sqs="$(infra/localstack.sh env | sed -n 's/^export AWS_ENDPOINT_URL_SQS=//p')"
  for entry in "${localstack_targets[@]}"; do
    read -r target filter <<<"$entry"
    env -u AWS_ENDPOINT_URL AWS_ENDPOINT_URL_SQS="$ls_sqs" AWS_ENDPOINT_URL_DYNAMODB="$AWS_ENDPOINT_URL" \
      cargo test --workspace --offline --test "$target" -- ${filter:+"$filter"} 2>&1 |
      tee -a .emulator/cargo-test-localstack.log || status=1
  done
else
  status=1
  echo "LocalStack did not start: its suites count as failed" | tee -a .emulator/cargo-test-localstack.log
fi
infra/localstack.sh stop
echo "LocalStack: $(($(date +%s) - ls_started)) s with start and stop" | tee .emulator/localstack-time.log

echo "== contract (schemathesis)"
infra/contract.sh run | tee .emulator/contract-summary.log || status=1
echo "== cfn-lint template.yaml"
.venv/bin/cfn-lint template.yaml || status=1
echo "== template and code agree"
./target/debug/webhooks-local resources > .emulator/resources.json
.venv/bin/python infra/check_template.py .emulator/resources.json | tee .emulator/template-check.log || status=1
echo "== browser (Playwright + Chromium)"
infra/browser.sh run | tee .emulator/browser-summary.log || status=1
echo "== README quick start, verbatim"
infra/quickstart.sh | tee .emulator/quickstart-summary.log || status=1

echo
echo "== suites"
# Pair each test binary with its result line; $2 is appended to each name.
suite_lines() {
  awk -v suffix="${2:-}" '
    /^ *Running / { name=$0; crate=$0; sub(/^ *Running (unittests )?/, "", name); sub(/ \(.*$/, "", name)
                    sub(/^.*deps\//, "", crate); sub(/-[0-9a-f]+\)$/, "", crate); name=crate " " name suffix }
    /^ *Doc-tests / { name=$0; sub(/^ *Doc-tests /, "doc-tests ", name) }
    /^test result:/ { if ($4 > 0 || $6 > 0) printf "  %-40s %s passed, %s failed\n", name, $4, $6+0 }
  ' "$1"
}
suite_lines .emulator/cargo-test.log
suite_lines .emulator/cargo-test-localstack.log " (LocalStack SQS)"
if grep -q '^LocalStack did not start' .emulator/cargo-test-localstack.log; then
  echo "  LocalStack SQS suites                    did not run: LocalStack did not start (.emulator/localstack/log)"
fi
echo "  proptest properties                      7 properties x ${PROPTEST_CASES} generated cases each"
echo "  js-compat (Node.js JSON.stringify)       3000 generated documents byte-identical"
sed 's/^/  note: /' "$EMULATOR_NOTES"
grep -h '^contract:' .emulator/contract-summary.log | sed 's/^/  /' || true
grep -h '^template-check:' .emulator/template-check.log | sed 's/^/  /' || true
grep -h '^browser:' .emulator/browser-summary.log | sed 's/^/  /' || true
grep -h '^quickstart:' .emulator/quickstart-summary.log | sed 's/^/  /' || true

cargo_logs=(.emulator/cargo-test.log .emulator/cargo-test-localstack.log)
passed=$(grep -hEo '^test result: [a-zA-Z]+\. [0-9]+ passed' "${cargo_logs[@]}" | awk '{s+=$4} END {print s+0}')
failed=$(grep -hEo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "${cargo_logs[@]}" | awk '{s+=$6} END {print s+0}')
tpl_passed=$(grep -Eo '[0-9]+ passed' .emulator/template-check.log | tail -1 | awk '{print $1+0}')
tpl_failed=$(grep -Eo '[0-9]+ failed' .emulator/template-check.log | tail -1 | awk '{print $1+0}')
contract_failed=0
grep -q '0 failures' .emulator/contract-summary.log || contract_failed=1
quickstart_failed=0
grep -q '^quickstart: README quick start ran verbatim' .emulator/quickstart-summary.log || quickstart_failed=1
browser_passed=$(grep -h '^browser:' .emulator/browser-summary.log | grep -Eo '[0-9]+ passed' | awk '{print $1+0}')
browser_failed=$(grep -h '^browser:' .emulator/browser-summary.log | grep -Eo '[0-9]+ failed' | awk '{print $1+0}')
browser_failed=${browser_failed:-1}
failed=$((failed + browser_failed))
failed=$((failed + quickstart_failed))
if [ "$status" -ne 0 ] && [ $((failed + ${tpl_failed:-0} + contract_failed)) -eq 0 ]; then
  failed=1
fi
echo "all: $((passed + ${tpl_passed:-0} + ${browser_passed:-0} + 2 - contract_failed - quickstart_failed)) passed, $((failed + ${tpl_failed:-0} + contract_failed)) failed"
exit "$status"
