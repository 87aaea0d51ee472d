#!/usr/bin/env bash
# Runs every test suite, as README.md says:
#   1. Swift: unit, store contract (PostgreSQL too when SPOOL_TEST_POSTGRES_URL is set; under
#      CI=true it must be), HTTP, WebSocket, webhooks and multi-process tests.
#   2. Python (Tests/python): the served OpenAPI document validated by an independent
#      validator, /metrics checked by promtool, a property-based API fuzzer (schemathesis)
#      run against a real `spool serve`, the Python SDK (clients/python) against it, and the
#      dashboard in headless Chromium over WebDriver (Debian's chromium + chromium-driver).
# Installs what a fresh machine lacks: promtool (Debian's prometheus package) and a venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
    elif [ "${CI:-}" = true ]; then
        echo "promtool is missing: install Debian's 'prometheus' package" >&2
        exit 1
    else
        echo "!!! promtool is missing (Debian's 'prometheus' package): the metrics check will be skipped" >&2
    fi
fi

status=0
swift build --build-tests
# One test at a time: the PostgreSQL suites share one server, and timing-sensitive tests
# (timeouts, delays, leader hand-over) must not compete with a hundred others for two cores.
swift test --skip-build --no-parallel || status=$?

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r Tests/python/requirements.txt
# The Python SDK as a user installs it (not editable: what ships is what is tested).
.venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python
SPOOL_BIN="$PWD/.build/debug/spool" .venv/bin/python -m pytest -q Tests/python || status=$?

exit "$status"
