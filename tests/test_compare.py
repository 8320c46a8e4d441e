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


# -- seed groups ----------------------------------------------------------------------------------
def seed_sweep(root: Path, runs: list[tuple[str, int, str, float | None]], metric: str = "hp/val_acc_best",
               extra: dict | None = None) -> Path:
    """Run dirs `cell=<c>,seed=<s>` with only a metrics.json: (cell, seed, status, value)."""
    for cell, seed, status, value in runs:
        run_dir = root / f"cell={cell},seed={seed}"
        run_dir.mkdir(parents=True)
        record = {"status": status, "overrides": [f"cell={cell}", f"seed={seed}", "debug=fast"],
                  "metrics": {metric: value, "test/acc": None if value is None else value - 0.01},
                  "optimized_metric": metric, **(extra or {}).get((cell, seed), {})}
        (run_dir / "metrics.json").write_text(json.dumps(record))
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_seed_groups_give_n_mean_std_ci_and_welch_p(tmp_path, capsys):
    """Groups of unequal n, one of a single run, one without spread; a failed run and a completed run
    whose metric is NaN (recorded as null) are left out of the statistics and counted as excluded.
    The expected values are SciPy 1.17's (t.ppf for the interval, ttest_ind(equal_var=False))."""
    lstm, gru = [0.81, 0.83, 0.80], [0.78, 0.79, 0.775, 0.77, 0.80]
    runs = ([("lstm", s, "completed", v) for s, v in enumerate(lstm, 1)]
            + [("gru", s, "completed", v) for s, v in enumerate(gru, 1)]
            + [("gru", 6, "failed", 0.99), ("gru", 7, "completed", None), ("gru", 8, "diverged", None)]
            + [("rnn", 1, "completed", 0.70), ("irnn", 1, "completed", 0.75), ("irnn", 2, "completed", 0.75)])
    sweep = seed_sweep(tmp_path / "sweep", runs)
    assert compare.main([str(sweep), "--no-plots"]) == 0  # --over seed by default: the seed varies

    rows = read_csv(sweep / "compare" / "groups.csv")
    assert [r["cell"] for r in rows] == ["lstm", "gru", "irnn", "rnn"]
    assert list(rows[0])[:4] == ["rank", "cell", "n", "excluded"] and "seed" not in rows[0]
    by = {r["cell"]: r for r in rows}
    assert [(by[c]["n"], by[c]["excluded"]) for c in ("lstm", "gru", "irnn", "rnn")] == [
        ("3", "0"), ("5", "3"), ("2", "0"), ("1", "0")]
    m = "hp/val_acc_best"
    assert float(by["lstm"][f"{m}_mean"]) == pytest.approx(0.8133333333)
    assert float(by["lstm"][f"{m}_std"]) == pytest.approx(0.0152752523)
    assert float(by["lstm"][f"{m}_ci95_low"]) == pytest.approx(0.7753875030, abs=1e-9)
    assert float(by["lstm"][f"{m}_ci95_high"]) == pytest.approx(0.8512791637, abs=1e-9)
    assert by["lstm"][f"{m}_p_welch"] == ""  # the best group is the reference
    assert float(by["gru"][f"{m}_mean"]) == pytest.approx(0.783)  # the failed run's 0.99 is not in it
    assert float(by["gru"][f"{m}_p_welch"]) == pytest.approx(0.04977828399892247, rel=1e-9)
    assert float(by["irnn"][f"{m}_std"]) == 0.0
    assert float(by["irnn"][f"{m}_ci95_low"]) == float(by["irnn"][f"{m}_ci95_high"]) == 0.75
    assert float(by["irnn"][f"{m}_p_welch"]) == pytest.approx(0.018844218960787532, rel=1e-9)
    assert by["rnn"][f"{m}_std"] == by["rnn"][f"{m}_ci95_low"] == by["rnn"][f"{m}_p_welch"] == ""
    assert float(by["rnn"][f"{m}_mean"]) == 0.70
    assert float(by["lstm"]["test/acc_mean"]) == pytest.approx(0.8033333333)  # the test metric too
    assert by["lstm"]["group"] == "cell=lstm,debug=fast"

    # every run keeps its row in runs.csv, named by its group
    per_run = read_csv(sweep / "compare" / "runs.csv")
    assert len(per_run) == len(runs)
    assert {r["group"] for r in per_run if r["cell"] == "gru"} == {"cell=gru,debug=fast"}
    markdown = (sweep / "compare" / "groups.md").read_text()
    assert f"| rank | cell | n | excluded | {m}_mean | {m}_std | {m}_ci95_low | {m}_ci95_high |" in markdown
    assert "| 1 | lstm | 3 | 0 | 0.8133 | 0.0153 | 0.7754 | 0.8513 | - |" in markdown
    assert "3 excluded" in capsys.readouterr().out


def test_seed_groups_follow_the_metric_direction_and_over_option(tmp_path):
    sweep = seed_sweep(tmp_path / "sweep", [("a", 1, "completed", 0.1), ("a", 2, "completed", 0.2),
                                             ("b", 1, "completed", 0.5), ("b", 2, "completed", 0.7)],
                       metric="val/loss")
    assert compare.main([str(sweep), "--no-plots"]) == 0
    assert [r["cell"] for r in read_csv(sweep / "compare" / "groups.csv")] == ["a", "b"]  # loss: lower first
    (sweep / "compare" / "groups.csv").unlink()
    assert compare.main([str(sweep), "--no-plots", "--over", "none"]) == 0
    assert not (sweep / "compare" / "groups.csv").exists()
    assert "group" not in read_csv(sweep / "compare" / "runs.csv")[0]
    with pytest.raises(SystemExit, match="--over model.dropout: model.dropout does not vary"):
        compare.main([str(sweep), "--no-plots", "--over", "model.dropout"])
    # grouping over the cell instead: one group per seed
    assert compare.main([str(sweep), "--no-plots", "--over", "cell"]) == 0
    rows = read_csv(sweep / "compare" / "groups.csv")
    assert sorted(r["seed"] for r in rows) == ["1", "2"] and {r["n"] for r in rows} == {"2"}


def test_trial_columns_appear_only_for_a_search(tmp_path):
    """A search's trial number, state and pruned step (rnnexp's Optuna sweeper) are columns, read
    from the record's `trial`; absent from a sweep that has none."""
    search = ["trial.storage=sqlite:///optuna.db", "trial.study_name=s"]
    extra = {("a", 1): {"trial": {"number": 0, "state": "COMPLETE"},
                        "overrides": ["cell=a", "seed=1", "trial.number=0", *search]},
             ("a", 2): {"trial": {"number": 1, "state": "PRUNED", "pruned_at_step": 40},
                        "overrides": ["cell=a", "seed=2", "trial.number=1", *search]}}
    sweep = seed_sweep(tmp_path / "search", [("a", 1, "completed", 0.5), ("a", 2, "pruned", 0.3)], extra=extra)
    assert compare.main([str(sweep), "--no-plots", "--over", "none"]) == 0
    rows = read_csv(sweep / "compare" / "runs.csv")
    assert list(rows[0])[:5] == ["rank", "status", "trial", "trial_state", "pruned_at_step"]
    assert [(r["status"], r["trial"], r["trial_state"], r["pruned_at_step"]) for r in rows] == [
        ("completed", "0", "COMPLETE", ""), ("pruned", "1", "PRUNED", "40")]
    # the overrides that tell a job its trial are neither override columns nor part of a group
    assert "trial.number" not in rows[0] and "trial.storage" not in rows[0]
    assert compare.group_name(["cell=a", "trial.number=3", "trial.storage=sqlite:///x.db"]) == "cell=a"
    plain = seed_sweep(tmp_path / "plain", [("a", 1, "completed", 0.5)])
    assert compare.main([str(plain), "--no-plots"]) == 0
    assert "trial" not in read_csv(plain / "compare" / "runs.csv")[0]


@pytest.mark.slow
def test_seed_groups_on_a_real_sweep(tmp_path):
    """`rnnexp-train -m optimizer.lr=1e-9,0.01 seed=1,2,3` (20 steps each): a known outcome, lr 1e-9
    cannot learn in 20 steps and stays near chance; the compare groups the seeds, ranks lr 0.01
    first, and its statistics are those of the runs' records."""
    sweep = tmp_path / "sweep"
    run_cli(["rnnexp-train", "-m", "optimizer.lr=1e-9,0.01", "seed=1,2,3", "debug=fast", "data.source=bundled",
             "trainer.max_epochs=5", "threads=1", f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path)
    out = tmp_path / "compare"
    done = run_cli(["rnnexp-compare", str(sweep), "--out", str(out), "--by", "optimizer.lr"], cwd=tmp_path, timeout=60)
    assert "groups of runs that differ only in seed" in done.stdout
    records = [json.loads((d / "metrics.json").read_text()) for d in job_dirs(sweep)]
    assert len(records) == 6 and {r["status"] for r in records} == {"completed"}
    values = {0.01: [], 1e-9: []}
    for r in records:
        values[r["hparams"]["optimizer.lr"]].append(r["metrics"]["hp/val_acc_best"])
    rows = read_csv(out / "groups.csv")
    assert [float(r["optimizer.lr"]) for r in rows] == [0.01, 1e-9]
    best, chance = rows
    assert best["n"] == chance["n"] == "3" and len(values[0.01]) == len(values[1e-9]) == 3
    assert float(best["hp/val_acc_best_mean"]) == pytest.approx(sum(values[0.01]) / 3)
    assert float(chance["hp/val_acc_best_mean"]) == pytest.approx(sum(values[1e-9]) / 3)
    assert float(chance["hp/val_acc_best_ci95_high"]) < 0.25 and float(best["hp/val_acc_best_ci95_low"]) > 0.4
    assert float(chance["hp/val_acc_best_p_welch"]) < 0.01
    assert best["group"].startswith("data.source=bundled,debug=fast,optimizer.lr=0.01") and "seed" not in best["group"]
    image = matplotlib.image.imread(out / "bars_hp_val_acc_best_by_optimizer.lr.png")
    assert image.ndim == 3 and image.shape[1] > 100
