"""The pytest plugin as a user's project sees it: loaded from the pytest11 entry point, in a pytest of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
# This suite's venv also holds the KEDA models' package, whose own pytest plugin needs what it does not install
# (the suite turns it off in pyproject.toml's addopts); a user's run here does the same.
OTHER_PLUGINS_OFF = ("-p", "no:cacheprovider", "-p", "no:cloudcoil")

JOBS = '''
import azjobs

@azjobs.job(queue="plugin-mail", max_retries=1)
def greet(name: str) -> str:
    if name == "bad":
        raise ValueError("no greeting for bad")
    return "hello " + name
'''


@pytest.fixture
def project(pytester, monkeypatch):
    """A folder with a jobs module, no node_modules, and no azurite on the PATH."""
    pytester.makepyfile(plugin_jobs=JOBS)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # this venv's commands only
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    return pytester


def test_the_plugin_is_registered_through_the_pytest11_entry_point():
    [plugin] = [ep for ep in entry_points(group="pytest11") if ep.name == "azjobs"]
    assert plugin.value == "azjobs.testing.pytest_plugin"


def test_loading_the_plugin_loads_no_other_azjobs_module():
    probe = ("import sys, json, azjobs.testing.pytest_plugin\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('azjobs'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["azjobs", "azjobs.testing", "azjobs.testing.pytest_plugin", "azjobs.version"]


def test_azjobs_inline_and_azjobs_recording_fixtures_in_a_users_test_run(project):
    project.makepyfile(test_user='''
        import azjobs
        import azjobs.testing
        from plugin_jobs import greet

        def test_inline(azjobs_inline):
            job_id = greet.enqueue("ada")
            assert azjobs.wait(job_id, timeout=0) == "hello ada"
            bad = greet.enqueue("bad")
            assert azjobs.result(bad).status is azjobs.JobStatus.FAILED
            assert [r.envelope.id for r in azjobs.testing.poisoned("plugin-mail")] == [bad]
            assert [r.outcome for r in azjobs_inline.runs] == ["succeeded", "retry_scheduled", "dead_lettered"]

        def test_recording(azjobs_recording):
            job_id = greet.enqueue("grace")
            assert [(j.job, j.args) for j in azjobs_recording.jobs] == [("plugin_jobs.greet", ("grace",))]
            assert azjobs.result(job_id).status is azjobs.JobStatus.READY
            [ran] = azjobs_recording.run_all()
            assert ran.value == "hello grace"

        def test_no_block_outside_the_fixtures():
            assert not isinstance(azjobs.default_client(), azjobs.testing.InlineClient)
    ''')
    result = project.runpytest_subprocess(*OTHER_PLUGINS_OFF)
    result.assert_outcomes(passed=3)


def test_the_azurite_fixture_skips_with_the_reason_when_azurite_is_not_installed(project):
    project.makepyfile(test_storage='''
        def test_needs_storage(azurite):
            raise AssertionError("must not run")

        def test_needs_a_worker(azjobs_worker):
            raise AssertionError("must not run")
    ''')
    result = project.runpytest_subprocess(*OTHER_PLUGINS_OFF, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*Azurite is not installed: install it with `npm install azurite`*"])


def test_with_azjobs_require_azurite_a_missing_azurite_fails_the_tests_instead(project):
    project.makeini("[pytest]\nazjobs_require_azurite = true\n")
    project.makepyfile(test_storage='''
        def test_needs_storage(azurite):
            raise AssertionError("must not run")
    ''')
    result = project.runpytest_subprocess(*OTHER_PLUGINS_OFF)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Azurite is not installed*azjobs_require_azurite is set*"])


def test_the_readmes_complete_example_is_the_example_project_as_it_is():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Testing your jobs"):readme.index("## Dashboard")]
    for name in ("shop_jobs.py", "tests/test_shop_jobs.py"):
        source = (ROOT / "tests" / "example_project" / name).read_text(encoding="utf-8")
        assert f"```python\n# {name}\n{source}```" in section, name
