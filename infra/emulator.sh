#!/usr/bin/env bash
# Installs (once, into .venv from PyPI) and starts or stops moto server, the AWS-API emulator
# the tests talk to. No Docker needed.
#   infra/emulator.sh install | start | stop | env
# start prints nothing but waits until the emulator answers; env prints the variables to export.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
state="$root/.emulator"
port="${EMULATOR_PORT:-4599}"
MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.51.0"

install() {
  if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/cfn-lint" ]; then
    echo "emulator: installing moto[server]==$MOTO_VERSION and cfn-lint==$CFN_LINT_VERSION into .venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
  fi
}

start() {
  install
  mkdir -p "$state"
  if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    return 0
  fi
  # moto's server, with DynamoDB writes serialised as DynamoDB's own are (see the script).
  "$venv/bin/python" "$root/infra/moto_server.py" 127.0.0.1 "$port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/pid"
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen(\"http://127.0.0.1:$port/moto-api/\", timeout=1)" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "emulator: moto server did not start; see $state/moto.log" >&2
  exit 1
}

stop() {
  if [ -f "$state/pid" ]; then
    kill "$(cat "$state/pid")" 2>/dev/null || true
    rm -f "$state/pid"
  fi
}

env_vars() {
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
ENV
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) env_vars ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
