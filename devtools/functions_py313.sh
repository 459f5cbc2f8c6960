#!/usr/bin/env bash
# Run the Azure Functions tests on Python 3.13 with azure-functions 2.x.
#
# azure-functions 1.x supports Python 3.10-3.12 and 2.x needs 3.13, so the generated
# bindings and the handler are checked against both. Creates .venv313 at the repo root
# with pyenv's 3.13 on first use and reuses it afterwards (idempotent). Exits non-zero
# if the venv cannot be built or any test fails. Extra arguments go to pytest.
# The Django Tasks backend's tests (tests/django; Django 6 needs Python 3.12+) run here too, and the
# language-worker tests (tests/functions_worker: azure-functions-runtime, the Python worker for 3.13+).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AZJOBS_VENV313:-$ROOT/.venv313}"

find_python313() {
    if [[ -n "${PYTHON313:-}" ]]; then
        echo "$PYTHON313"; return
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local candidate
        candidate="$(pyenv root)/versions/3.13.0/bin/python3.13"
        if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
    fi
    command -v python3.13 || true
}

if [[ ! -x "$VENV/bin/python" ]]; then
    PY="$(find_python313)"
    if [[ -z "$PY" ]]; then
        echo "functions_py313: no Python 3.13 found (set PYTHON313 or install it with pyenv)" >&2
        exit 2
    fi
    echo "functions_py313: creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi

# The Python language worker for 3.13+ (tests/functions_worker drive it as the host does), and the
# protobuf runtime its protos are built for (its own dev pin: protobuf~=5.29).
RUNTIME_VERSION="1.3.0"
PROTOBUF_VERSION="5.29.6"

# Install (quietly) only when the venv is new or pyproject.toml / this script changed.
STAMP="$VENV/.azjobs-py313-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]] || ! "$VENV/bin/python" -c "import azure.functions, azure_functions_runtime, azjobs, pytest, opentelemetry.sdk, django" 2>/dev/null; then
    LOG="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "azure-functions>=2,<3" "azure-identity>=1.15" "pytest>=8" "hypothesis>=6.100" \
        "opentelemetry-api>=1.20" "opentelemetry-sdk>=1.20" \
        "azure-functions-runtime==$RUNTIME_VERSION" "protobuf==$PROTOBUF_VERSION" \
        -e "$ROOT[dashboard,django,workflows]" >"$LOG" 2>&1; then
        tail -40 "$LOG" >&2
        echo "functions_py313: pip install failed (full log: $LOG)" >&2
        exit 1
    fi
    echo "$WANT" >"$STAMP"
fi
# The host's FunctionRpc messages for tests/functions_worker (downloaded once; see the script).
"$VENV/bin/python" "$ROOT/devtools/functionrpc_protos.py" "$VENV/functionrpc" >/dev/null

"$VENV/bin/python" - <<'EOF'
import sys
import azure.functions as func
from importlib.metadata import version
v = version("azure-functions")
print(f"functions_py313: Python {sys.version.split()[0]}, azure-functions {v}", file=sys.stderr)
if sys.version_info[:2] < (3, 13) or not v.startswith("2."):
    sys.exit("functions_py313: expected Python 3.13 and azure-functions 2.x")
EOF

cd "$ROOT"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/unit/test_functions_bindings.py \
    tests/unit/test_workflow_orchestrator.py \
    tests/integration/test_functions_handler.py \
    tests/integration/test_parity.py \
    tests/integration/test_tracing.py \
    tests/unit/test_schedules_periodic.py \
    "tests/integration/test_schedules.py::test_a_functions_timer_handler_invoked_with_a_timer_request_enqueues_the_job" \
    tests/integration/test_dashboard_functions.py \
    "$@"
# A session of its own: the real language worker indexes function_app.py, whose jobs are azjobs' default registry.
echo "functions_py313: the Python language worker (azure-functions-runtime $RUNTIME_VERSION) driven as the host drives it (tests/functions_worker)" >&2
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/functions_worker "$@"
# A session of its own: setting Django up registers the test project's tasks in azjobs' registry.
echo "functions_py313: Django Tasks backend tests (tests/django)" >&2
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/django "$@"
