#!/usr/bin/env bash
# The API contract run: schemathesis (from PyPI, into .venv-contract) generates requests for
# every operation of the OpenAPI document that the local runner serves, with a valid token,
# and fails on any 5xx, any response that does not match the document, or any crash.
#   infra/contract.sh install | run
# `run` must be started inside the test network namespace (infra/test.sh does): the test
# endpoint and the pipeline send to whatever URLs are generated, and there nothing leaves
# 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-contract"
SCHEMATHESIS_VERSION="4.32.5"
EXAMPLES="${CONTRACT_EXAMPLES:-100}"

install() {
  if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "contract: installing schemathesis==$SCHEMATHESIS_VERSION into .venv-contract" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
}

run() {
  install
  local port="${CONTRACT_PORT:-3997}" secret="contract-jwt-secret-0123456789abcdef"
  local log="$root/.emulator/contract-runner.log"
  mkdir -p "$root/.emulator"
  # A fresh runner (the durable default, in an empty DATA_DIR) so the run does not depend on
  # other suites' data.
  local data="$root/.emulator/contract-data"
  rm -rf "$data"
  env -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_SQS -u AWS_ENDPOINT_URL_DYNAMODB -u BACKEND \
    DATA_DIR="$data" PORT="$port" JWT_SECRET="$secret" RUST_LOG=warn "$root/target/debug/webhooks-local" >"$log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' RETURN
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/api/openapi.json', timeout=1)" 2>/dev/null && break
    sleep 0.2
  done
  local token
  token="$(JWT_SECRET="$secret" "$root/target/debug/webhooks-local" token --sub contract --tenant contract)"
  # Response conformance, server errors, auth and stateful checks. Positive/negative
  # acceptance are left out: the API validates more than a JSON Schema can say (SSRF rules,
  # the WHATWG URL parser), so "schema-valid" and "accepted" differ by design.
  local out="$root/.emulator/contract.log"
  set +e
  "$venv/bin/schemathesis" run "http://127.0.0.1:$port/api/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance,negative_data_rejection \
    --max-examples "$EXAMPLES" --request-timeout 15 --seed 20261128 \
    --warnings off >"$out" 2>&1
  local rc=$?
  set -e
  grep -E "generated|passed|failed|ST[0-9]+" "$out" | tail -8
  if ! kill -0 $pid 2>/dev/null; then
    echo "contract: the local runner crashed during the run; see $log" >&2
    rc=1
  fi
  local generated
  generated=$(grep -Eo '[0-9]+ generated' "$out" | tail -1 | awk '{print $1}')
  if [ "$rc" -ne 0 ]; then
    cat "$out" >&2
    echo "contract: ${generated:-0} requests generated, FAILED" 
    return 1
  fi
  if [ "${generated:-0}" -lt 1000 ]; then
    echo "contract: only ${generated:-0} requests generated; expected at least 1000" >&2
    return 1
  fi
  echo "contract: ${generated} generated requests, 0 failures (schemathesis $SCHEMATHESIS_VERSION)"
}

case "${1:-}" in
  install) install ;;
  run) run ;;
  *) echo "usage: $0 install|run" >&2; exit 2 ;;
esac
