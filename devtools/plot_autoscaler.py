"""Run the autoscaler test and plot its replica curve into docs/ (needs matplotlib: pip install matplotlib).

    .venv/bin/python -m devtools.plot_autoscaler            # run the test, then plot
    .venv/bin/python -m devtools.plot_autoscaler --no-run   # plot docs/autoscaler-run.json again

The test (tests/reliability/test_autoscaler.py) saves what its KEDA-like scaler saw and did every
poll to the file named by $AZJOBS_AUTOSCALER_DATA; this writes docs/autoscaler-run.json and
docs/autoscaler-replicas.png from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "autoscaler-run.json"
PLOT = ROOT / "docs" / "autoscaler-replicas.png"
TEST = "tests/reliability/test_autoscaler.py::test_a_burst_scales_workers_up_and_back_to_zero_with_every_job_run_and_no_replica_killed"


def run_test() -> None:
    env = dict(os.environ, AZJOBS_AUTOSCALER_DATA=str(DATA))
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-s", TEST], cwd=ROOT, env=env, check=True)


def plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(DATA.read_text(encoding="utf-8"))
    samples, settings = data["samples"], data["settings"]
    t = [s["t"] for s in samples]
    fig, replicas_axis = plt.subplots(figsize=(9, 4.5), dpi=110)
    length_axis = replicas_axis.twinx()
    length_axis.plot(t, [s["queue_length"] for s in samples], color="tab:gray", linewidth=1,
                     label=f"queue length seen by the scaler ({settings['strategy']})")
    replicas_axis.step(t, [s["desired"] for s in samples], where="post", color="tab:orange", linestyle="--",
                       label="desired replicas", zorder=3)
    replicas_axis.step(t, [s["replicas"] for s in samples], where="post", color="tab:blue", linewidth=2,
                       label="running replicas")
    replicas_axis.step(t, [s["terminating"] for s in samples], where="post", color="tab:red", linewidth=1,
                       label="terminating (SIGTERM, draining)")
    replicas_axis.set_xlabel("seconds")
    replicas_axis.set_ylabel("replicas")
    replicas_axis.set_ylim(0, settings["max_replicas"] + 1)
    length_axis.set_ylabel("messages")
    killed = sum(r["killed"] for r in data["replicas"])
    replicas_axis.set_title(f"{data['short_jobs']} short + {data['long_jobs']} 1-3 s jobs: queueLength "
                            f"{settings['queue_length']} (= -c), max {settings['max_replicas']}, cooldown "
                            f"{settings['cooldown_s']:g} s; lost {data['lost']}, SIGKILLed {killed}", fontsize=10)
    lines = replicas_axis.get_legend_handles_labels()
    more = length_axis.get_legend_handles_labels()
    replicas_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT)
    print(f"wrote {PLOT.relative_to(ROOT)} and {DATA.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="plot the saved data without running the test")
    if not parser.parse_args().no_run:
        run_test()
    plot()


if __name__ == "__main__":
    main()
