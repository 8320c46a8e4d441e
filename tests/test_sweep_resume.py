"""An interrupted sweep, rerun into its own directory, finishes without redoing finished jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

SWEEP = ["-m", "cell=rnn,gru", "debug=fast", "data.source=bundled", "threads=1",
         "trainer.limit_train_batches=6"]


def _stamps(job: Path) -> dict:
    return {p.relative_to(job): p.stat().st_mtime_ns
            for p in [job / "metrics.json", *sorted((job / "checkpoints").iterdir())]}


@pytest.mark.slow
def test_rerun_skips_finished_jobs_and_completes_the_rest(venv_bin, tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [str(venv_bin / "rnnexp-train"), *SWEEP, f"hydra.sweep.dir={sweep_dir}",
               f"paths.output_root={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and first is None:
        for record in sweep_dir.glob("*/metrics.json"):
            try:
                if json.loads(record.read_text())["status"] == "completed":
                    first = record.parent
            except (json.JSONDecodeError, KeyError):
                pass  # never half-written (atomic), but the file may be replaced between calls
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first is not None, "the first job did not finish in time"
    assert first.name == "cell=rnn"  # named by the swept key only, as the rerun names it again
    others = [p for p in sweep_dir.iterdir() if p.is_dir() and p != first and not p.name.startswith(".")]
    assert all(json.loads((p / "metrics.json").read_text())["status"] != "completed"
               for p in others if (p / "metrics.json").exists())
    before = _stamps(first)
    finished = json.loads((first / "metrics.json").read_text())

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already completed: nothing to do" in rerun.stderr + rerun.stdout
    assert _stamps(first) == before  # not retrained: record and checkpoints untouched
    assert json.loads((first / "metrics.json").read_text()) == finished
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    for job in jobs:
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["status"] == "completed"
