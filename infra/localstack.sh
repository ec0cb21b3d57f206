#!/usr/bin/env bash
# LocalStack serving SQS, in host mode (no Docker): the second SQS emulator `make test` runs the
# queue suites against (moto keeps serving DynamoDB: LocalStack's DynamoDB and Lambda download
# DynamoDB Local / runtimes at start, which these machines cannot do).
#   infra/localstack.sh install | start | stop | env | status
# install  creates $LOCALSTACK_VENV (default .venv-localstack) with Python 3.13 and the pinned
#          packages of infra/localstack-requirements.txt; needs PyPI, so it runs in phase 1.
# start    starts it on 127.0.0.1:$LOCALSTACK_PORT (default: a free port) in its own process
#          group, and waits until /_localstack/health says sqs is available; all its files go
#          under .emulator/localstack/; nothing is sent anywhere (events, analytics, certificate
#          and DNS features off), so it runs in the test phase's loopback-only namespace.
# stop     stops that process group: SIGTERM, then SIGKILL after $LOCALSTACK_STOP_GRACE
#          seconds (default 3; LocalStack can be slow to act on SIGTERM). With
#          LOCALSTACK_OWNER_PID set, a watchdog does the same when that process dies first.
# env      prints the variable to export: AWS_ENDPOINT_URL_SQS.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LOCALSTACK_VENV:-$root/.venv-localstack}"
requirements="$root/infra/localstack-requirements.txt"
state="$root/.emulator/localstack"
grace="${LOCALSTACK_STOP_GRACE:-3}"
start_timeout="${LOCALSTACK_START_TIMEOUT:-120}"

# Python 3.13: $LOCALSTACK_PYTHON, else pyenv's 3.13.x, else python3.13 on PATH.
python313() {
  if [ -n "${LOCALSTACK_PYTHON:-}" ]; then
    echo "$LOCALSTACK_PYTHON"
    return
  fi
  local pyroot
  pyroot="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  local candidate
  for candidate in "$pyroot"/versions/3.13.*/bin/python; do
    if [ -x "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
  if command -v python3.13 >/dev/null 2>&1; then
    command -v python3.13
    return
  fi
  echo "localstack: needs Python 3.13 (pyenv install 3.13, or set LOCALSTACK_PYTHON)" >&2
  exit 1
}

stamp() { sha256sum "$requirements" | cut -d' ' -f1; }

install() {
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$(stamp)" ]; then
    return 0
  fi
  local py started
  py="$(python313)"
  started=$(date +%s.%N)
  echo "localstack: installing infra/localstack-requirements.txt into ${venv#"$root"/} ($("$py" --version))" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  # The service catalog LocalStack's Docker image builds at build time: without it the first
  # request of every start spends ~7 s building it.
  mkdir -p "$venv/localstack-static"
  FILESYSTEM_ROOT="$venv/localstack-static/fs" DISABLE_EVENTS=1 "$venv/bin/python" -c '
import sys
from localstack.aws import spec
spec.build_service_index_cache(sys.argv[1] + "/" + spec._get_catalog_filename())' "$venv/localstack-static"
  rm -rf "$venv/localstack-static/fs"
  stamp >"$venv/.requirements.sha256"
  echo "localstack: installed in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.0f", b - a}') s" >&2
}

pid_alive() {
  [ -f "$state/pid" ] || return 1
  local pid
  pid="$(cat "$state/pid")"
  # The pid is ours only while it is still a LocalStack process (pids get reused).
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack\.runtime\.main'
}

free_port() {
  "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 0 when the health endpoint lists sqs as running (loaded at start: EAGER_SERVICE_LOADING).
healthy() {
  "$venv/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_localstack/health", timeout=1) as r:
    state = json.load(r)["services"]["sqs"]
sys.exit(0 if state == "running" else 1)
PY
}

# With LOCALSTACK_OWNER_PID set (the test command sets its own pid), a watchdog ends the
# LocalStack process group once that process is gone, even when it was SIGKILLed and its trap
# never ran. It exits by itself within a second of LocalStack's end.
watchdog() {
  [ -n "${LOCALSTACK_OWNER_PID:-}" ] || return 0
  setsid bash -c 'while kill -0 "$1" && kill -0 "$2"; do sleep 1; done
    kill -0 "$2" || exit 0
    kill -TERM -- "-$2"
    for _ in $(seq 1 "$(($3 * 10))"); do kill -0 "$2" || exit 0; sleep 0.1; done
    kill -KILL -- "-$2"' \
    localstack-watchdog "$LOCALSTACK_OWNER_PID" "$(cat "$state/pid")" "$grace" >/dev/null 2>&1 </dev/null &
}

start() {
  if [ ! -x "$venv/bin/python" ]; then
    echo "localstack: not installed; run infra/localstack.sh install first (it needs PyPI)" >&2
    exit 1
  fi
  mkdir -p "$state"
  if pid_alive; then
    return 0
  fi
  local port="${LOCALSTACK_PORT:-}"
  [ -n "$port" ] || port="$(free_port)"
  rm -rf "$state/fs" "$state/tmp"
  mkdir -p "$state/fs/usr/lib/localstack" "$state/tmp"
  ln -s "$venv"/localstack-static/service-catalog-*.dill "$state/fs/usr/lib/localstack/"
  local started
  started=$(date +%s.%N)
  # setsid: its own session and process group (pgid = pid), so stop can end everything it made.
  # The process writes its own pid: when this script runs as a process-group leader (a shell
  # with job control), setsid forks, and `$!` would be the parent that exits at once.
  rm -f "$state/pid"
  env OVERRIDE_IN_DOCKER=0 GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" \
    LOCALSTACK_HOST="127.0.0.1:$port" SQS_ENDPOINT_STRATEGY=path SERVICES=sqs \
    EAGER_SERVICE_LOADING=1 SQS_DISABLE_CLOUDWATCH_METRICS=1 DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
    FILESYSTEM_ROOT="$state/fs" TMPDIR="$state/tmp" PERSISTENCE=0 \
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$state/pid" "$venv/bin/python" -m localstack.runtime.main \
    >"$state/log" 2>&1 </dev/null &
  for _ in $(seq 1 50); do
    [ -s "$state/pid" ] && break
    sleep 0.1
  done
  echo "$port" >"$state/port"
  local deadline=$(($(date +%s) + start_timeout))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    # kill -0, not pid_alive: until the exec the process is still `sh`.
    if ! kill -0 "$(cat "$state/pid" 2>/dev/null)" 2>/dev/null; then
      echo "localstack: exited during start; last lines of $state/log:" >&2
      tail -20 "$state/log" >&2
      rm -f "$state/pid"
      exit 1
    fi
    if healthy "$port"; then
      watchdog
      echo "localstack: SQS ready on 127.0.0.1:$port after $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s (pid $(cat "$state/pid"))" >&2
      return 0
    fi
    sleep 0.2
  done
  echo "localstack: SQS not ready after ${start_timeout} s; see $state/log" >&2
  stop
  exit 1
}

# Members of the process group start made (its leader may already be gone).
group_alive() { pgrep -g "$1" -f localstack >/dev/null 2>&1; }

stop() {
  [ -f "$state/pid" ] || return 0
  local pid
  pid="$(cat "$state/pid")"
  if pid_alive || group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    local waited=0
    while group_alive "$pid" && [ "$waited" -lt $((grace * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if group_alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        group_alive "$pid" || break
        sleep 0.1
      done
    fi
    if group_alive "$pid"; then
      echo "localstack: process group $pid survived SIGKILL" >&2
      exit 1
    fi
  fi
  rm -f "$state/pid"
}

env_vars() {
  if [ ! -f "$state/port" ]; then
    echo "localstack: not started" >&2
    exit 1
  fi
  echo "export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$(cat "$state/port")"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  env) env_vars ;;
  status) if pid_alive; then echo "running on 127.0.0.1:$(cat "$state/port") (pid $(cat "$state/pid"))"; else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 install|start|stop|env|status" >&2; exit 2 ;;
esac
