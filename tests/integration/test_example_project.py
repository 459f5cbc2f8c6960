"""The example project (tests/example_project) as a user has it: azjobs and the project installed in a fresh
venv, its own pytest run with no storage reachable; a broken job makes that run fail.

To stay fast and offline, the fresh venv gets the third-party packages azjobs needs (and pytest) from this
suite's venv through a ``.pth`` line, but azjobs itself and the example project are built and installed into
it from copies of their sources (not editable): the run checks that ``azjobs`` is imported from there.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from azjobs.testing.azurite import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "tests" / "example_project"
GOOD_LINE = '    return f"receipt for order {order_id} sent to {email}"'
BROKEN_LINE = '    return f"receipt for order {order_id} sent to {email.upper()}"'  # a deliberate bug


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)


def _pip(venv_python: Path, *args) -> None:
    done = _run([sys.executable, "-m", "pip", "--python", venv_python, "--disable-pip-version-check", "install",
                 "--no-deps", "--no-build-isolation", "--no-index", "-q", *args])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A fresh venv with azjobs (built from a copy of this checkout) and the example project installed."""
    base = tmp_path_factory.mktemp("example")
    env_dir = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # the dependencies (azure-storage-queue, ..., pytest) from this suite's venv, behind the venv's own packages
    (purelib / "zz_suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = base / "azjobs-src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "azjobs", source / "azjobs", ignore=shutil.ignore_patterns("__pycache__"))
    _pip(python, source)
    project = base / "shop"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "build",
                                                                    "*.egg-info"))
    _pip(python, project)
    closed = free_port()  # nothing listens there: any storage call fails
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AZJOBS_", "AzureWebJobs", "PYTEST_", "PYTHON"))}
    env["AzureWebJobsStorage"] = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                                  f"QueueEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;"
                                  f"BlobEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;"
                                  f"TableEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;")
    return {"python": python, "project": project, "env": env, "purelib": purelib}


def _pytest(venv: dict) -> subprocess.CompletedProcess:
    # -p no:cloudcoil: the KEDA models' package, among the suite's dependencies, brings a pytest plugin that
    # needs what it does not install (the suite's own addopts turn it off too)
    return _run([venv["python"], "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:cloudcoil", "-q"],
                cwd=venv["project"], env=venv["env"])


def test_azjobs_and_the_example_are_the_venvs_own_installs(venv):
    done = _run([venv["python"], "-c", "import azjobs, shop_jobs, importlib.metadata as m; "
                 "print(azjobs.__file__); print(shop_jobs.__file__); "
                 "print([e.value for e in m.entry_points(group='pytest11') if e.name == 'azjobs'])"],
                cwd="/", env=venv["env"])
    assert done.returncode == 0, done.stderr
    azjobs_file, shop_file, plugins = done.stdout.splitlines()
    assert Path(azjobs_file).is_relative_to(venv["purelib"]) and Path(shop_file).is_relative_to(venv["purelib"])
    assert plugins == "['azjobs.testing.pytest_plugin']"
    assert site.getsitepackages()[0] not in azjobs_file


def test_the_example_projects_tests_pass_with_no_storage_reachable(venv):
    done = _pytest(venv)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "6 passed" in done.stdout and "skipped" not in done.stdout


def test_a_deliberately_broken_job_makes_the_example_projects_tests_fail(venv):
    jobs = venv["project"] / "shop_jobs.py"
    text = jobs.read_text()
    assert GOOD_LINE in text
    jobs.write_text(text.replace(GOOD_LINE, BROKEN_LINE))
    try:
        _pip(venv["python"], "--force-reinstall", venv["project"])
        done = _pytest(venv)
    finally:
        jobs.write_text(text)
        _pip(venv["python"], "--force-reinstall", venv["project"])
    assert done.returncode == 1, done.stdout[-4000:]
    assert "1 failed, 5 passed" in done.stdout
    assert "FAILED tests/test_shop_jobs.py::test_placing_an_order_sends_its_receipt" in done.stdout
    assert "receipt for order 42 sent to ADA@EXAMPLE.COM" in done.stdout
