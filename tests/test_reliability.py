"""Runs die; researchers must lose at most the work since the last checkpoint, and be told plainly
what was wrong with a bad command line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from rnnexp.errors import CheckpointError, DivergenceError
from rnnexp.training import train

COMPARED = ("val/acc", "val/loss", "test/acc", "test/loss", "hp/val_acc_best", "hp/test_acc", "train/acc")


def _cli(venv_bin: Path, args: list[str], cwd: Path, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNEXP_DEBUG", None)
    return subprocess.run([str(venv_bin / "rnnexp-train"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# Kills at every point of a run, Ctrl-C included, and their resumes: tests/test_resume_matrix.py


def test_two_identical_runs_give_identical_metrics(make_cfg):
    overrides = ["model.dropout=0.2", "model.num_layers=2"]
    first, second = train(make_cfg(overrides)), train(make_cfg(overrides))
    for key in COMPARED:
        assert first["metrics"][key] == second["metrics"][key], key


def test_diverging_run_stops_as_diverged_and_keeps_a_loadable_finite_checkpoint(make_cfg):
    # tanh RNN, plain SGD at an absurd learning rate: the weights overflow within two steps
    cfg = make_cfg(["cell=rnn", "optimizer=sgd", "optimizer.lr=1e38",
                    "callbacks.periodic_checkpoint.every_n_train_steps=1"])
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: .* is (inf|nan).*lower optimizer.lr"):
        train(cfg)
    record = _record(Path(cfg.paths.output_dir))
    assert record["status"] == "diverged"
    checkpoint = torch.load(record["last_good_checkpoint"], weights_only=True)
    weights = {k: t for k, t in checkpoint["state_dict"].items() if k.startswith(("encoder.", "head."))}
    assert weights and all(torch.isfinite(t).all() for t in weights.values())


def test_completed_run_directory_is_not_rerun_or_overwritten(make_cfg):
    cfg = make_cfg()
    first = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = train(cfg)
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == stamps


def test_crafted_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    from rnnexp.evaluate import evaluate

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"run_config": Payload()}}, crafted)
    with pytest.raises(CheckpointError, match="refused to load"):
        evaluate(str(crafted), [])
    assert not marker.exists()


def test_eval_refuses_a_checkpoint_of_a_different_architecture(make_cfg):
    from rnnexp.evaluate import evaluate

    record = train(make_cfg())
    with pytest.raises(CheckpointError, match="do not fit the model.*size mismatch"):
        evaluate(record["best"]["checkpoint"], ["model.hidden_size=64"])


BAD_INPUTS = [
    (["cell.name=elman"], "cell.name='elman' is not valid; allowed: gru, irnn, lstm, rnn"),
    (["optimizer.name=lbfgs"], "optimizer.name='lbfgs' is not valid; allowed: adam, adamw, rmsprop, sgd"),
    (["scheduler.name=linear"], "scheduler.name='linear' is not valid; allowed: cosine, none, plateau, step"),
    (["data.dataset=cifar10"], "data.dataset='cifar10' is not valid; allowed: mnist, fashion_mnist"),
    (["model.hidden_size=0"], "model.hidden_size=0 is not valid; allowed: an integer > 0"),
    (["model.num_layers=-1"], "model.num_layers=-1 is not valid; allowed: an integer > 0"),
    (["flush_denormal=sometimes"], "flush_denormal='sometimes' is not valid; allowed: true, false"),
    (["trainer.profiler=bogus"], "trainer.profiler='bogus' is not valid; allowed: null, simple, advanced, pytorch"),
    (["callbacks.periodic_checkpoint.every_n_seconds=-5"],
     "callbacks.periodic_checkpoint.every_n_seconds=-5 is not valid; allowed: a number >= 0 (0 = by steps only)"),
    (["callbacks.divergence_guard.check_every_n_steps=0"],
     "callbacks.divergence_guard.check_every_n_steps=0 is not valid; allowed: an integer >= 1 (1 = every step)"),
    (["callbacks.divergence_guard.check_every_n_steps=often"],
     "callbacks.divergence_guard.check_every_n_steps='often' is not valid; allowed: an integer >= 1 (1 = every step)"),
    (["data.batch_size=0"], "data.batch_size=0 is not valid; allowed: an integer > 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid"),
    (["optimizer.lr=0"], "optimizer.lr=0 is not valid; allowed: a number > 0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not valid; allowed: a number > 0"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not valid; allowed: a number > 0"),
    (["model.dropout=1.0"], "model.dropout=1.0 is not valid; allowed: a number in [0, 1)"),
    (["model.dropout=-0.5"], "model.dropout=-0.5 is not valid; allowed: a number in [0, 1)"),
    (["cell=rnn", "cell.nonlinearity=sigmoid"],
     "cell.nonlinearity='sigmoid' is not valid; allowed: tanh, relu (sigmoid and identity need model.backend=explicit)"),
    (["data=adding", "data.seq_len=0"], "data.seq_len=0 is not valid"),
    (["data=adding", "bptt=truncated", "bptt.k1=0"], "bptt.k1=0 is not valid"),
    (["data=adding", "bptt=truncated", "bptt.k1=10", "bptt.k2=5"], "bptt.k2=5 is not valid"),
    (["data=adding", "bptt=truncated", "bptt.k1=10", "model.bidirectional=true"], "bptt.name='truncated'"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[o[0] for o, _ in BAD_INPUTS])
def test_bad_value_is_one_clear_line_and_exit_code_2(venv_bin, tmp_path, overrides, message):
    result = _cli(venv_bin, [*overrides, f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"rnnexp-train: error: {message}" or \
        result.stderr.strip().splitlines()[-1].startswith(f"rnnexp-train: error: {message}")
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs/*/*"))  # the run directory it had created is gone again


@pytest.mark.parametrize("args,message", [
    (["cell=elman"], "Could not find 'cell/elman'"),
    (["optimizer=lbfgs"], "Could not find 'optimizer/lbfgs'"),
    (["scheduler=linear"], "Could not find 'scheduler/linear'"),
    (["data=cifar10"], "Could not find 'data/cifar10'"),
    (["model.hidden_sise=64"], "Key 'hidden_sise' is not in struct"),
])
def test_unknown_group_option_or_key_names_it(venv_bin, tmp_path, args, message):
    result = _cli(venv_bin, [*args, f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode != 0 and message in result.stderr


def test_local_source_with_missing_files_names_the_folders(venv_bin, tmp_path):
    result = _cli(venv_bin, ["data.source=local", f"paths.data_dir={tmp_path}/nowhere",
                             f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert "data.source=local: no mnist files" in result.stderr and f"{tmp_path}/nowhere/MNIST/raw" in result.stderr


def test_corrupted_data_file_is_named(venv_bin, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(b"\x1f\x8b truncated")
    result = _cli(venv_bin, ["data.source=local", f"paths.data_dir={tmp_path}/data",
                             f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 2 and "train-images-idx3-ubyte.gz: cannot read" in result.stderr


@pytest.mark.parametrize("make_dir,message", [
    (False, "no such run directory"),
    (True, "not an rnnexp run directory (no .hydra/overrides.yaml)"),
])
def test_resume_of_a_missing_or_foreign_directory_is_refused(venv_bin, tmp_path, make_dir, message):
    # (a run directory killed before its first checkpoint starts over: tests/test_resume_matrix.py)
    target = tmp_path / "run"
    if make_dir:
        target.mkdir()
    result = _cli(venv_bin, [f"resume={target}"], tmp_path)
    assert result.returncode == 2 and message in result.stderr
