"""``azjobs check`` on heartbeat files as a worker leaves them (and as a full disk or a crash can)."""

from __future__ import annotations

import io
import json
import re
import time

from azjobs.cli import main


def _check(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["check", *args], stdout=out, stderr=err)
    return code, (out.getvalue() + err.getvalue()).strip()


def _beat(path, **fields) -> str:
    record = {"version": 1, "pid": 4242, "written_at": time.time(), "interval_s": 10.0,
              "storage_ok_at": time.time(), "storage_error": None, "stopping": False, "queues": ["emails"]}
    record.update(fields)
    path.write_text(json.dumps(record), encoding="utf-8")
    return str(path)


def test_a_half_written_file_is_unreadable_not_healthy(tmp_path):
    path = tmp_path / "heartbeat.json"
    path.write_text('{"version": 1, "pid": 42', encoding="utf-8")
    code, line = _check("--heartbeat", str(path))
    assert code == 1 and line.startswith(f"unreadable: heartbeat file {path}"), line


def test_a_worker_storage_never_answered_fails_readiness_with_the_reason_but_passes_liveness(tmp_path):
    path = _beat(tmp_path / "hb.json", storage_ok_at=None, storage_error="connection refused")
    code, line = _check("--heartbeat", path)
    assert (code, line) == (1, "storage: worker pid 4242 has not had an answer from storage yet: connection refused")
    code, line = _check("--heartbeat", path, "--storage-max-age", "0")
    assert code == 0 and line.startswith("ok: worker pid 4242 heartbeat"), line


def test_storage_silent_longer_than_the_limit_fails_and_says_for_how_long(tmp_path):
    path = _beat(tmp_path / "hb.json", storage_ok_at=time.time() - 300, storage_error="503 ServerBusy")
    code, line = _check("--heartbeat", path)
    assert code == 1 and re.fullmatch(r"storage: worker pid 4242 last had an answer from storage 30\ds ago "
                                      r"\(more than 120s\): 503 ServerBusy", line), line


def test_the_default_staleness_limit_is_three_of_the_workers_intervals(tmp_path):
    path = _beat(tmp_path / "hb.json", interval_s=20.0, written_at=time.time() - 50)
    assert _check("--heartbeat", path)[0] == 0  # 50 s < 3 x 20 s
    path = _beat(tmp_path / "hb.json", interval_s=20.0, written_at=time.time() - 70)
    code, line = _check("--heartbeat", path)
    assert code == 1 and re.fullmatch(r"stale: worker pid 4242 last wrote its heartbeat 7\ds ago \(more than 60s\)",
                                      line), line


def test_a_stopping_worker_is_still_healthy_and_says_so(tmp_path):
    code, line = _check("--heartbeat", _beat(tmp_path / "hb.json", stopping=True))
    assert code == 0 and line.endswith("(stopping)"), line


def test_bad_arguments_exit_2():
    try:
        _check("--max-age", "-3", "--heartbeat", "x")
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("a negative --max-age was accepted")
