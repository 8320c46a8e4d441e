"""rnnexp-train through its real command line (subprocesses), as a researcher runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SHRINK = ["debug=fast", "data.source=bundled", "threads=1", "trainer.limit_train_batches=2"]


def run_cli(venv_bin: Path, args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNEXP_DEBUG", None)
    return subprocess.run([str(venv_bin / "rnnexp-train"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_two_job_multirun_makes_two_run_directories_named_by_the_swept_key(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["-m", "cell=rnn,gru", *SHRINK, f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    # named by the swept key only; the constant overrides are in each job's record
    assert jobs == ["cell=gru", "cell=rnn"]
    assert all("trainer.limit_train_batches=2" in json.loads((sweeps[0] / job / "metrics.json").read_text())["overrides"]
               for job in jobs)
    for job in jobs:
        record = json.loads((sweeps[0] / job / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert record["hparams"]["cell.name"] == job.split(",")[0].split("=")[1]
        assert list((sweeps[0] / job).glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_single_run_prints_test_accuracy_and_where_the_run_went(venv_bin, tmp_path):
    # data.source=auto on a machine with no MNIST files and no network: the bundled subset, loudly
    args = [a for a in SHRINK if not a.startswith("data.source")]
    result = run_cli(venv_bin, [*args, f"paths.output_root={tmp_path}", f"paths.data_dir={tmp_path}/data"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc = " in result.stdout
    assert "using bundled mnist" in result.stderr + result.stdout
    run_dirs = list((tmp_path / "runs").glob("*/*_lstm_mnist_row"))
    assert len(run_dirs) == 1 and str(run_dirs[0].name) in result.stdout
    assert "tensorboard --logdir" in result.stdout


def test_unknown_cell_group_lists_the_valid_cells(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["cell=elman", f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode != 0
    for name in ("gru", "irnn", "lstm", "rnn"):
        assert name in result.stderr
    assert "cell/elman" in result.stderr


def test_bad_value_exits_non_zero_with_one_line_naming_the_key(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["model.hidden_size=0", *SHRINK, f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["rnnexp-train: error: model.hidden_size=0 is not valid; allowed: an integer > 0"]
    assert "Traceback" not in result.stderr


def test_help_and_cfg_answer_without_training(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["--cfg", "job", "cell=gru"], tmp_path)
    assert result.returncode == 0 and "name: gru" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_help_lists_every_config_group_and_the_composed_config(venv_bin, tmp_path):
    # the listing comes from the files of each config group in conf/, nested groups included
    result = run_cli(venv_bin, ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cell: gru, irnn, lstm, rnn" in result.stdout
    assert "bptt: full, lookback, truncated" in result.stdout
    assert "hydra/launcher: joblib, submitit_local, submitit_slurm" in result.stdout
    assert "\nhydra: " not in result.stdout  # always used, never picked
    assert "hidden_size: 128" in result.stdout  # the composed config follows the groups
    assert not (tmp_path / "outputs").exists()


def test_help_composes_the_overrides_it_is_given(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["--help", "cell=gru", "model.hidden_size=7"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "name: gru" in result.stdout and "hidden_size: 7" in result.stdout


def test_help_with_an_unknown_option_is_one_line_naming_it(venv_bin, tmp_path):
    result = run_cli(venv_bin, ["--help", "cell=foo"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rnnexp-train: error: In 'train': Could not find 'cell/foo' (rnnexp-train --help lists each group's options)"]
