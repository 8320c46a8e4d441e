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


def fake_sweep(root: Path, runs: dict[str, tuple[str, dict]], metric: str) -> Path:
    """A sweep folder of run dirs `run=<name>`, each with only a metrics.json: (status, metrics)."""
    for name, (status, metrics) in runs.items():
        run_dir = root / f"run={name}"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(
            {"status": status, "overrides": [f"run={name}", "debug=fast"], "metrics": metrics,
             "optimized_metric": metric, "epochs": 2, "global_step": 10}))
    return root


def table_order(stdout: str, names) -> list[str]:
    """The names in the order the printed table lists them (one table row per run)."""
    rows = {name: next(i for i, line in enumerate(stdout.splitlines()) if f" {name} " in line) for name in names}
    return sorted(rows, key=rows.get)


@pytest.mark.parametrize("metric,best,worse", [("hp/val_acc_best", 0.9, 0.1),
                                               ("val/loss", 0.1, 0.9), ("hp/val_mse_best", 0.01, 5.0)])
def test_runs_that_did_not_complete_rank_after_every_completed_run(tmp_path, capsys, metric, best, worse):
    """A diverged and a failed run whose partial values beat both completed runs still come after
    them, in the table, its CSV and Markdown, whichever way the metric points."""
    step = (worse - best) / 10  # from best towards worse
    sweep = fake_sweep(tmp_path / "sweep", {
        "alpha": ("completed", {metric: best + 4 * step}),   # second best completed
        "bravo": ("diverged", {metric: best}),               # best partial value of all
        "charlie": ("completed", {metric: best + 3 * step}),  # best completed
        "delta": ("failed", {metric: best + step}),
    }, metric)
    assert compare.main([str(sweep), "--no-plots"]) == 0
    expected = ["charlie", "alpha", "delta", "bravo"]  # completed by the metric, then failed, diverged

    with open(sweep / "compare" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == expected
    assert [r["status"] for r in rows] == ["completed", "completed", "failed", "diverged"]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert float(rows[3][metric]) == pytest.approx(best)  # still listed with its partial value

    markdown = (sweep / "compare" / "runs.md").read_text().splitlines()
    body = [line for line in markdown if line.startswith("| ") and not line.startswith("| rank")]
    assert [line.split(" | ")[2] for line in body] == expected  # | rank | status | run | ...
    assert [line.split(" | ")[1] for line in body] == ["completed", "completed", "failed", "diverged"]

    out = capsys.readouterr().out
    assert table_order(out, expected) == expected
    for name, status in zip(expected, ("completed", "completed", "failed", "diverged"), strict=True):
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert status in line  # the status is shown next to the run


def test_rank_groups_every_status_and_puts_missing_metrics_last_within_a_group(tmp_path):
    """Completed first; then running, interrupted, no record, failed, diverged, then statuses it
    does not know (e.g. pruned) by name; best first within a status, no value last; both directions."""
    def run(name, status, value):
        record = {"metrics": {"val/acc": value, "val/loss": None if value is None else 1 - value}}
        if status != "no record":
            record["status"] = status
        return compare.Run(tmp_path / name, record, {})

    runs = [run("pruned", "pruned", 0.99), run("div", "diverged", 0.98), run("fail_none", "failed", None),
            run("fail", "failed", 0.97), run("done_none", "completed", None), run("zombie", "zombie", 0.5),
            run("done_low", "completed", 0.2), run("running", "running", 0.95), run("done_high", "completed", 0.3),
            run("unrecorded", "no record", 0.96), run("interrupted", "interrupted", 0.94)]
    expected = ["done_high", "done_low", "done_none", "running", "interrupted", "unrecorded",
                "fail", "fail_none", "div", "pruned", "zombie"]
    for metric, maximize in (("val/acc", True), ("val/loss", False)):
        assert [r.path.name for r in compare.rank(runs, metric, maximize)] == expected
    # reversed direction: the order within each status flips, the groups stay where they are
    flipped = [r.path.name for r in compare.rank(runs, "val/acc", maximize=False)]
    assert flipped == ["done_low", "done_high", "done_none", "running", "interrupted", "unrecorded",
                       "fail", "fail_none", "div", "pruned", "zombie"]


def test_plots_follow_the_ranking(tmp_path):
    """With plots on, the sweep still writes its bar chart; the bars average completed runs only,
    in ranked order (partial values only while no run has completed)."""
    sweep = fake_sweep(tmp_path / "sweep", {
        "alpha": ("completed", {"val/acc": 0.5}), "bravo": ("diverged", {"val/acc": 0.9}),
        "charlie": ("completed", {"val/acc": 0.6}), "delta": ("failed", {"val/acc": 0.8}),
    }, "val/acc")
    assert compare.main([str(sweep), "--by", "run"]) == 0
    image = matplotlib.image.imread(sweep / "compare" / "bars_val_acc_by_run.png")
    assert image.ndim == 3 and image.shape[1] > 100
    runs = compare.rank([compare.load_run(d) for d in compare.find_runs([sweep])], "val/acc", True)
    assert [r.path.name for r in runs] == ["run=charlie", "run=alpha", "run=delta", "run=bravo"]
    scored, partial = compare.bar_runs(runs, "val/acc")
    assert [r.path.name for r in scored] == ["run=charlie", "run=alpha"] and not partial
    # no run completed yet: the bars show what there is, marked partial
    scored, partial = compare.bar_runs(runs[2:], "val/acc")
    assert [r.path.name for r in scored] == ["run=delta", "run=bravo"] and partial
