#!/usr/bin/env bash
# The official Standard Webhooks verifiers, for tests/tests/first_hour.rs (issue 14): the tests
# check that a delivery verifies with the secret exactly as the API returned it.
#   install: PyPI `standardwebhooks` into .venv-standardwebhooks, npm `standardwebhooks` into
#            .node-standardwebhooks (both pinned; needs the registries, so phase 1 of make test)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
PY_VERSION=1.1.0
NPM_VERSION=1.1.1
case "${1:-}" in
  install)
    if [ ! -x .venv-standardwebhooks/bin/python ] ||
      ! .venv-standardwebhooks/bin/python -c 'import standardwebhooks' 2>/dev/null; then
      echo "standardwebhooks: PyPI $PY_VERSION into .venv-standardwebhooks" >&2
      python3 -m venv .venv-standardwebhooks
      .venv-standardwebhooks/bin/pip install --quiet "standardwebhooks==$PY_VERSION"
    fi
    if [ ! -f .node-standardwebhooks/node_modules/standardwebhooks/package.json ]; then
      echo "standardwebhooks: npm $NPM_VERSION into .node-standardwebhooks" >&2
      mkdir -p .node-standardwebhooks
      npm install --silent --no-audit --no-fund --prefix .node-standardwebhooks "standardwebhooks@$NPM_VERSION" >/dev/null
    fi
    ;;
  *)
    echo "usage: infra/standardwebhooks.sh install" >&2
    exit 2
    ;;
esac
