"""Sweeps through the real command line on each launcher, an Optuna search, and a 2-process DDP run.

All shrunk (debug=fast on the bundled MNIST subset) and one torch thread per process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_compare import CELLS, job_dirs, run_cli, shared_sweep

SHRINK = ["debug=fast", "data.source=bundled", "threads=1"]


def records_under(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))]


def event_writer_pids(run_dir: Path) -> set[str]:
    # events.out.tfevents.<time>.<host>.<pid>.<n>: the process that trained the run
    return {p.name.split(".")[-2] for p in run_dir.glob("events.out.tfevents.*")}


@pytest.mark.slow
def test_joblib_runs_the_jobs_in_parallel_worker_processes(tmp_path_factory):
    sweep = shared_sweep(tmp_path_factory)  # `-m hydra/launcher=joblib cell=rnn,gru ...`
    launcher = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == -1
    dirs = job_dirs(sweep)
    records = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    assert sorted(r["hparams"]["cell.name"] for r in records) == sorted(CELLS)
    assert all(r["status"] == "completed" and 0.0 <= r["optimized_value"] <= 1.0 for r in records)
    pids = [event_writer_pids(d) for d in dirs]
    assert all(len(p) == 1 for p in pids) and pids[0] != pids[1]  # one loky worker per job


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(["rnnexp-train", "-m", "hydra/launcher=submitit_local", "cell=rnn,gru", *SHRINK,
             f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    records = [json.loads((d / "metrics.json").read_text()) for d in job_dirs(sweep)]
    assert sorted(r["hparams"]["cell.name"] for r in records) == ["gru", "rnn"]
    assert all(r["status"] == "completed" and r["global_step"] == 4 for r in records)
    # each job ran as a submitit job: its log and result pickle are under .submitit/<job id>/
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2


@pytest.mark.slow
def test_optuna_search_of_three_trials_records_the_best(tmp_path):
    sweep = tmp_path / "search"
    run_cli(["rnnexp-train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *SHRINK,
             f"paths.output_root={tmp_path}", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    records = records_under(sweep)
    assert len(records) == 3 and all(r["status"] == "completed" for r in records)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # maximize, because data.metric_mode=max for accuracy
    assert results["best_value"] == pytest.approx(max(r["optimized_value"] for r in records))
    assert set(results["best_params"]) == {"optimizer.lr", "model.hidden_size", "model.num_layers", "cell"}
    best = next(r for r in records if r["optimized_value"] == pytest.approx(results["best_value"]))
    assert best["hparams"]["optimizer.lr"] == pytest.approx(results["best_params"]["optimizer.lr"])

    import optuna

    study = optuna.load_study(study_name="mnist_row", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.direction.name == "MAXIMIZE"
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # a rerun continues from here


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_record(tmp_path):
    run_cli(["rnnexp-train", "trainer=ddp", *SHRINK, f"paths.output_root={tmp_path}"], cwd=tmp_path)
    records = list(tmp_path.rglob("metrics.json"))
    assert len(records) == 1  # rank 1 shares rank 0's run directory and writes no record
    run_dir = records[0].parent
    record = json.loads(records[0].read_text())
    assert record["status"] == "completed" and record["optimized_value"] is not None
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second process ran in the same directory
    # 4 batches of 64 per process over the 512 training sequences: 4 optimizer steps, both ranks in step
    assert record["global_step"] == 4 and record["hparams"]["data.batch_size"] == 64
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
