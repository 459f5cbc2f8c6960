"""`pip install .` in a fresh venv gives a working package and console script, enqueue included."""

import base64
import json
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fresh_install_enqueues_from_a_separate_process(tmp_path, connection_string, queue_name, raw_queue):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    version = subprocess.run([str(env_dir / "bin" / "azjobs"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("azjobs ")
    module = subprocess.run([str(python), "-m", "azjobs", "--version"], capture_output=True, text=True, check=True)
    assert module.stdout == version.stdout
    # azure.functions is not needed on the enqueue side
    probe = subprocess.run([str(python), "-c", "import azure.functions"], capture_output=True)
    assert probe.returncode != 0

    jobs = tmp_path / "myjobs.py"
    jobs.write_text(textwrap.dedent(f"""
        import azjobs

        @azjobs.job(queue="{queue_name}")
        def add(a, b):
            return a + b

        class Mail(azjobs.Job):
            queue = "{queue_name}"
            def perform(self, to, subject="hi"):
                pass
    """))
    script = "import myjobs; print(myjobs.add.enqueue(1, 2)); print(myjobs.Mail.enqueue('x@y', subject='s'))"
    out = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"AzureWebJobsStorage": connection_string, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    q = raw_queue(queue_name)
    found = {}
    for m in q.receive_messages(messages_per_page=32, max_messages=32):
        data = json.loads(base64.b64decode(m.content))
        found[data["id"]] = data
    assert set(found) == set(ids)
    assert found[ids[0]]["job"] == "myjobs.add" and found[ids[0]]["args"] == [1, 2]
    assert found[ids[1]]["job"] == "myjobs.Mail" and found[ids[1]]["kwargs"] == {"subject": "s"}
