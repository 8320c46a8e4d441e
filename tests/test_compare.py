"""rnnexp-compare on a real sweep: the ranked table, its CSV and Markdown, and the plots.

The sweep (two jobs, cell=rnn,gru, through the real command line and the joblib launcher) is run
once per test session and shared with test_launchers.py and test_tensorboard_sweep.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from rnnexp import compare

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CELLS = ("rnn", "gru")


def run_cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """A console script of the venv, one torch thread per process (2 cores shared by all tests)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def shared_sweep(tmp_path_factory) -> Path:
    """`rnnexp-train -m hydra/launcher=joblib cell=rnn,gru` (shrunk), run once per session."""
    root = tmp_path_factory.getbasetemp() / "shared_sweep"
    sweep = root / "sweep"
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        run_cli(["rnnexp-train", "-m", "hydra/launcher=joblib", f"cell={','.join(CELLS)}", "debug=fast",
                 "data.source=bundled", f"paths.output_root={root}", f"hydra.sweep.dir={sweep}"], cwd=root)
        (root / "done").touch()
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return shared_sweep(tmp_path_factory)


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())


@pytest.mark.slow
def test_compare_ranks_the_sweep_by_its_varying_override(sweep, tmp_path):
    out = tmp_path / "compare"
    done = run_cli(["rnnexp-compare", str(sweep), "--out", str(out), "--by", "cell"], cwd=tmp_path, timeout=60)
    records = {json.loads((d / "metrics.json").read_text())["hparams"]["cell.name"]: json.loads(
        (d / "metrics.json").read_text()) for d in job_dirs(sweep)}
    assert set(records) == set(CELLS)

    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    # the swept key is a column; keys every job shares (debug=fast, data.source=bundled) are not
    assert "cell" in rows[0] and "debug" not in rows[0] and "data.source" not in rows[0]
    assert [r["cell"] for r in rows] == sorted(CELLS, key=lambda c: -records[c]["optimized_value"])
    for row in rows:
        record = records[row["cell"]]
        assert row["status"] == "completed"
        assert float(row["hp/val_acc_best"]) == pytest.approx(record["metrics"]["hp/val_acc_best"])
        assert float(row["test/acc"]) == pytest.approx(record["metrics"]["test/acc"])
        assert int(row["num_params"]) == record["num_params"] and int(row["epochs"]) == record["epochs"]
    assert float(rows[0]["hp/val_acc_best"]) >= float(rows[1]["hp/val_acc_best"])

    markdown = (out / "runs.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("| rank"))
    assert "| cell |" in header and sum(line.startswith(("| 1 |", "| 2 |")) for line in markdown) == 2
    assert "hp/val_acc_best" in done.stdout and "gru" in done.stdout and "rnn" in done.stdout

    for png in ("curves_val_acc.png", "bars_hp_val_acc_best_by_cell.png"):
        image = matplotlib.image.imread(out / png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, png


@pytest.mark.slow
def test_compare_reads_a_sweep_in_progress(sweep, tmp_path, capsys):
    """One job still running (its record has no metrics yet), one not yet recorded, one failed:
    all are listed with their status and what their events hold."""
    live = tmp_path / "live"
    shutil.copytree(sweep, live)
    running, unrecorded = job_dirs(live)
    record = json.loads((running / "metrics.json").read_text())
    logged_best = record["metrics"]["hp/val_acc_best"]
    record.update(status="running", metrics={}, optimized_value=None)
    (running / "metrics.json").write_text(json.dumps(record))
    (unrecorded / "metrics.json").unlink()
    failed = live / "cell=lstm,data.source=bundled,debug=fast"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "overrides.yaml").write_text("- cell=lstm\n- debug=fast\n- data.source=bundled\n")
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "overrides": ["cell=lstm", "debug=fast"],
                                                     "error": "RuntimeError: boom"}))

    assert compare.main([str(live), "--no-plots"]) == 0
    with open(live / "compare" / "runs.csv") as f:
        rows = {r["run_dir"]: r for r in csv.DictReader(f)}
    assert {r["status"] for r in rows.values()} == {"running", "no record", "failed"}
    assert rows[running.name]["status"] == "running"
    assert float(rows[running.name]["hp/val_acc_best"]) == pytest.approx(logged_best)  # read from its events
    assert rows[unrecorded.name]["cell"] in CELLS and rows[unrecorded.name]["hp/val_acc_best"] != ""
    assert rows[failed.name]["cell"] == "lstm" and rows[failed.name]["hp/val_acc_best"] == ""
    assert list(rows)[-1] == failed.name  # no score: ranked last, still listed
    assert "failed" in capsys.readouterr().out


def test_direction_follows_the_metric_name():
    assert compare.higher_is_better("hp/val_acc_best") and compare.higher_is_better("test/acc")
    assert not compare.higher_is_better("val/mse") and not compare.higher_is_better("val/loss")


def test_varying_axes_keep_only_keys_that_differ(tmp_path):
    def run(*overrides):
        return compare.Run(tmp_path, {"overrides": list(overrides)}, compare.parse_overrides(list(overrides)))

    runs = [run("cell=rnn", "debug=fast", "paths.output_root=/x", "model.bidirectional=true"),
            run("cell=gru", "debug=fast", "paths.output_root=/y")]
    assert compare.varying_axes(runs) == ["cell", "model.bidirectional"]
    assert runs[1].axis("model.bidirectional") == "default"
