"""The architecture is checked, not hoped for: layers, no circles, small modules, a light ``import azjobs``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "azjobs"
MAX_LINES = 500
FEATURES = ("azjobs.state", "azjobs.workflows", "azjobs.schedules", "azjobs.telemetry", "azjobs.poison", "azjobs.limits",
            "azjobs.dashboard", "azjobs.runtime", "azjobs.functions", "azjobs.cli", "azjobs.contrib")


def _fresh(code: str) -> list[str]:
    """The azjobs modules a fresh interpreter has loaded after ``code``."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('azjobs'))))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import grimp sees."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.find_modules_directly_imported_by(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_azjobs_modules_import_each_other_in_a_circle_counting_imports_inside_functions():
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph("azjobs", exclude_type_checking_imports=True)
    finally:
        sys.path.remove(str(ROOT))
    cycles = _cycles(graph)
    assert cycles == [], f"import circles: {[sorted(group) for group in cycles]}"


def test_no_module_is_over_500_lines():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert sizes and {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_import_azjobs_loads_at_most_15_azjobs_modules_and_no_feature():
    loaded = _fresh("import azjobs")
    assert len(loaded) <= 15, loaded
    assert [m for m in loaded if m.startswith(FEATURES)] == []


def test_declaring_and_enqueueing_a_job_loads_the_model_the_api_and_storage_only():
    loaded = _fresh(
        "import azjobs\n"
        "sent = []\n"
        "client = azjobs.Client('UseDevelopmentStorage=true')\n"
        "client.send_text = lambda queue, text, **options: sent.append((queue, text, options))  # no network\n"
        "@azjobs.job(queue='light-q')\n"
        "def greet(name: str) -> None: ...\n"
        "job_id = greet.options(client=client, delay=5).enqueue('ada')\n"
        "assert [(q, o['visibility_timeout']) for q, _, o in sent] == [('light-q', 5)], sent\n"
        "assert azjobs.Envelope.decode(sent[0][1]).id == job_id\n")
    assert [m for m in loaded if m.startswith(FEATURES)] == []
    assert {"azjobs.api.calls", "azjobs.storage.client", "azjobs.model.envelope"} <= set(loaded)
