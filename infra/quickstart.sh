#!/usr/bin/env bash
# Runs the README's quick start verbatim, so the README cannot drift from what works: the
# ```sh blocks after the `<!-- quickstart:server -->`, `<!-- quickstart:client -->` and
# `<!-- quickstart:log -->` markers, exactly as written. The server block runs in the
# background (it is "terminal 1"); the client and log blocks run in one shell ("terminal 2"),
# with a bounded wait between them for the delivery that `listen` prints. Passes when listen
# printed a verified delivery and the delivery log shows it succeeded.
# Run by phase 2 of `make test` after the Rust suites: the quick start builds webhooks-local
# without the `aws` feature, so the full binary the suites spawn is put back at the end.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
work="$root/.emulator/quickstart"
rm -rf "$work" && mkdir -p "$work"

block() { # the ```sh block that follows the marker $1 in README.md
  awk -v marker="<!-- quickstart:$1 -->" '
    $0 == marker { armed = 1; next }
    armed && /^```sh$/ { inside = 1; next }
    inside && /^```$/ { exit }
    inside { print }
  ' README.md
}
for b in server client log; do
  block "$b" >"$work/$b.sh"
  [ -s "$work/$b.sh" ] || { echo "quickstart: README has no <!-- quickstart:$b --> block" >&2; exit 1; }
done

server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -TERM -- "-$server_pid" 2>/dev/null || true
  # Back to the full binary the suites (and the next run) use. `--workspace --bins` is phase 1's
  # own build, so its units are fresh and cargo only copies the binary back (seconds);
  # `-p webhooks-local` resolves features differently and recompiled the AWS SDK crates (minutes).
  cargo build -q --offline --workspace --bins >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Its own data directory (the default backend is SQLite in DATA_DIR): a fresh start, and no
# clash with the lock of a runner the developer left running on .webhooks-data.
# A new user's shell has no emulator settings; make test's does, so they are cleared here.
unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS BACKEND
DATA_DIR="$work/data" setsid bash -e "$work/server.sh" >"$work/server.log" 2>&1 </dev/null &
server_pid=$!
# The server block compiles on a fresh checkout: wait for it (bounded) before terminal 2.
for _ in $(seq 1 1200); do
  grep -q 'listening on http://127.0.0.1:3000' "$work/server.log" && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "quickstart: the server block exited" >&2; exit 1; }
  sleep 0.5
done
grep -q 'listening on http://127.0.0.1:3000' "$work/server.log" || { echo "quickstart: no server after 600 s" >&2; exit 1; }

out="$work/terminal2.log"
{
  cat "$work/client.sh"
  echo "for _ in \$(seq 1 100); do grep -q 'verified (X-Webhook-Signature and webhook-signature)' '$out' && break; sleep 0.2; done"
  cat "$work/log.sh"
} >"$work/terminal2.sh"
timeout 120 bash -e "$work/terminal2.sh" >"$out" 2>&1 </dev/null || { cat "$out" >&2; echo "quickstart: terminal 2 failed" >&2; exit 1; }
cat "$out"
# curl prints no newline after a body: without this the summary line below would not start a
# line, and infra/suites.sh (which looks for it at a line's start) would count the run failed.
[ -z "$(tail -c1 "$out")" ] || echo
if grep -q 'verified (X-Webhook-Signature and webhook-signature)' "$out" && grep -q '"status":"succeeded"' "$out"; then
  echo "quickstart: README quick start ran verbatim: a verified delivery, logged as succeeded"
else
  echo "quickstart: FAILED: no verified, succeeded delivery in $out" >&2
  exit 1
fi
