"""The resume contract under fault injection: a real `rnnexp-train` process is killed with SIGKILL
at an exact step and stage (RNNEXP_FAULT, rnnexp/callbacks/fault_injection.py), resumed with
`rnnexp-train resume=<run dir>` (killed again, for some cases), and must end with the record of
the run left alone: the same test, validation and training metrics, the same global_step, the
same optimizer steps in every epoch, the same TensorBoard series, and fit and wall times summed
over its segments.

Configurations: full BPTT on row MNIST (a final target, dropout, a step-per-epoch LR schedule; once
more with a validation in the middle of each epoch),
truncated BPTT on copy memory (a target at every step, 4 optimizer steps per batch, last.ckpt
every 6 steps, which no batch ends on exactly), and DDP with 2 CPU processes. Kill points:
before the first checkpoint, right after the initial one, the first step, mid-epoch, the last
batch of an epoch, right after the end-of-epoch checkpoint, during validation, during a checkpoint
write, during the test stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

COMMON = ["debug=fast", "threads=1", "trainer.max_epochs=2",
          "data.eval_batch_size=100", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
          "model.hidden_size=24", "callbacks.periodic_checkpoint.every_n_seconds=0",
          "callbacks.test_figures.enabled=false"]
# 8 batches (steps) an epoch; last.ckpt every 3 steps; dropout draws from the RNG; the LR halves each epoch
FULL = [*COMMON, "data.source=bundled", "data.limit_train_samples=512", "trainer.limit_train_batches=8", "model.num_layers=2",
        "model.dropout=0.3", "scheduler=step", "scheduler.step_size=1",
        "callbacks.periodic_checkpoint.every_n_train_steps=3"]
# copy memory, T = 10 (30 steps), k1 = k2 = 8: 4 optimizer steps a batch, 6 batches = 24 steps an epoch
TRUNCATED = [*COMMON, "data=copy_memory", "data.seq_len=10", "data.limit_train_samples=384",
             "trainer.limit_train_batches=6", "bptt=truncated", "bptt.k1=8", "bptt.k2=8",
             "callbacks.periodic_checkpoint.every_n_train_steps=6"]
# 2 processes share the 8 batches: 4 steps an epoch
DDP = [*FULL[:-1], "trainer=ddp", "callbacks.periodic_checkpoint.every_n_train_steps=2"]
# validation in the middle of each epoch too (after batches 4 and 8), last.ckpt every 2 steps
MID_VALIDATION = [*FULL[:-1], "trainer.val_check_interval=0.5", "callbacks.periodic_checkpoint.every_n_train_steps=2"]
CONFIGS = {"full": FULL, "truncated": TRUNCATED, "ddp": DDP, "midval": MID_VALIDATION}

CASES = [
    # (config, kill points in order: one per segment)
    ("full", ["fit_start@0"]),              # before the first checkpoint exists
    ("full", ["train_start@0"]),            # right after the initial checkpoint
    ("full", ["train_batch_end@1"]),        # the first step
    ("full", ["train_batch_end@4"]),        # mid-epoch, a step after last.ckpt
    ("full", ["train_batch_end@8"]),        # the last batch of epoch 0, before its validation
    ("full", ["train_epoch_end@8"]),        # right after the end-of-epoch checkpoint
    ("full", ["validation_batch_end@8"]),   # between the two validation batches of epoch 0
    ("full", ["save_checkpoint@9"]),        # while last.ckpt of step 9 is being written
    ("full", ["test_batch_end@16"]),        # in the test stage, after training ended
    ("full", ["train_batch_end@5!INT"]),    # Ctrl-C: last.ckpt at the end of the next batch, then stop
    ("full", ["train_batch_end@4!INT,train_batch_end@4!INT"]),  # Ctrl-C twice: stop at once
    ("full", ["train_batch_end@4", "train_epoch_end@8"]),  # a second kill in the resumed run
    ("full", ["train_epoch_end@8", "train_batch_end@13"]),
    ("truncated", ["train_batch_end@8"]),
    ("truncated", ["train_epoch_end@24"]),
    ("truncated", ["validation_batch_end@24"]),
    ("truncated", ["save_checkpoint@12", "train_batch_end@36"]),
    ("midval", ["validation_batch_end@4"]),  # during a validation in the middle of epoch 0
    ("midval", ["train_batch_end@5"]),       # after the batch that follows it
    ("ddp", ["train_batch_end@3"]),
    ("ddp", ["train_epoch_end@4"]),
    ("ddp", ["train_batch_end@3#1"]),        # only rank 1 dies: rank 0 must fail, not wait for ever
]
COMPARED_PREFIXES = ("test/", "val/", "hp/", "train/acc", "train/loss")


def cli(venv_bin: Path, args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RNNEXP_DEBUG", "RNNEXP_FAULT", "RNNEXP_RESUME_FROM"):
        env.pop(name, None)
    if fault:
        env["RNNEXP_FAULT"] = fault
    # SIGINT at its default disposition, as a terminal's Ctrl-C finds it, even when this suite runs
    # in the background (a shell's background jobs start with SIGINT ignored, and keep it so)
    return subprocess.run([str(venv_bin / "rnnexp-train"), *args], cwd=cwd, env=env, capture_output=True, check=False,
                          text=True, timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def record_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def scalar_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run (events a resumed run purged are left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, round(e.value, 5)) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"] if not tag.startswith("lr-")}


def saved_state(run_dir: Path) -> tuple[int, float, float]:
    """(global_step, fit seconds, wall seconds) of the checkpoint a resume will start from."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return -1, 0.0, 0.0
    checkpoint = torch.load(last, weights_only=True)
    clock = checkpoint["callbacks"]["ExactResume"]
    return checkpoint["global_step"], clock["fit_time_s"], clock["wall_time_s"]


def case_id(config: str, kills: list[str]) -> str:
    """A name that is also a folder name Hydra takes on its command line (no '=', ',', '@', '#', '!')."""
    text = "+".join(kills)
    for old, new in (("@", "_at_"), ("#", "_rank"), ("!", "_sig"), (",", "+")):
        text = text.replace(old, new)
    return f"{config}-{text}"


def run_chain(venv_bin: Path, root: Path, config: str, kills: list[str]) -> dict:
    """Run `config` killed at each point of `kills` in turn (resuming after each), then resume it
    to the end; with no kills, the run left alone."""
    run_dir = root / (case_id(config, kills) if kills else f"reference-{config}") / "run"
    run_dir.parent.mkdir(parents=True)
    steps = []
    for i, kill in enumerate([*kills, None]):
        args = [*CONFIGS[config], f"hydra.run.dir={run_dir}"] if i == 0 else [f"resume={run_dir}"]
        result = cli(venv_bin, args, run_dir.parent, fault=kill)
        record = record_of(run_dir) if (run_dir / "metrics.json").is_file() else {}
        steps.append({"kill": kill, "returncode": result.returncode, "stderr": result.stderr[-3000:],
                      "status": record.get("status"), "error": record.get("error", ""),
                      "saved": saved_state(run_dir)})
        if kill is None or result.returncode == 0:
            break
    return {"run_dir": run_dir, "steps": steps}


@pytest.fixture(scope="module")
def matrix(venv_bin, tmp_path_factory, request) -> dict:
    """The chains of the selected CASES and their configurations' runs left alone, two processes
    at a time (one torch thread each, on this 2-core machine); DDP chains one at a time (each is 2
    processes)."""
    root = tmp_path_factory.mktemp("matrix")
    selected = {case_id(item.callspec.params["config"], item.callspec.params["kills"])
                for item in request.session.items if item.module is request.module and hasattr(item, "callspec")}
    ddp_lock = threading.Lock()

    def run(config, kills):
        if config == "ddp":
            with ddp_lock:
                return run_chain(venv_bin, root, config, kills)
        return run_chain(venv_bin, root, config, kills)

    cases = [(config, kills) for config, kills in CASES if case_id(config, kills) in selected]
    jobs = {f"reference-{name}": (name, []) for name in sorted({config for config, _ in cases})}
    jobs.update({case_id(config, kills): (config, kills) for config, kills in cases})
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run, *job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("config,kills", CASES, ids=[case_id(c, k) for c, k in CASES])
def test_killed_and_resumed_run_ends_with_the_record_of_the_run_left_alone(matrix, config, kills):
    reference = matrix[f"reference-{config}"]
    assert reference["steps"][0]["returncode"] == 0, reference["steps"][0]["stderr"]
    whole = record_of(reference["run_dir"])
    chain = matrix[case_id(config, kills)]
    run_dir, steps = chain["run_dir"], chain["steps"]
    assert len(steps) == len(kills) + 1, steps[-1]["stderr"]  # each kill happened
    for step in steps[:-1]:
        if "#" in step["kill"]:  # another process died: rank 0 saw its connection close
            assert step["returncode"] == 1 and step["status"] == "failed", step
        elif "!INT" in step["kill"]:  # Ctrl-C: stopped cleanly, said so, told how to go on
            assert step["returncode"] == 1 and step["status"] == "interrupted", step
            assert "resume=" in step["error"]
            pressed_at = int(step["kill"].split("@")[1].split("!")[0])
            if "," in step["kill"]:  # twice: at once, leaving the last periodic checkpoint
                assert step["saved"][0] < pressed_at
            else:  # once: at the end of the next batch (FaultInjection runs after last.ckpt's hook)
                assert step["saved"][0] == pressed_at + 1
        else:
            assert step["returncode"] in (-9, 137) or (config == "ddp" and step["returncode"] != 0), step
            assert step["status"] == "running", step  # SIGKILL leaves no chance to write more
    assert steps[-1]["returncode"] == 0, steps[-1]["stderr"]
    _, fit_before, wall_before = steps[-2]["saved"]

    got = record_of(run_dir)
    assert got["status"] == "completed"
    assert got["global_step"] == whole["global_step"]
    assert got["optimizer_steps_per_epoch"] == whole["optimizer_steps_per_epoch"]
    assert len(got["optimizer_steps_per_epoch"]) == 2
    compared = sorted(k for k in whole["metrics"] if k.startswith(COMPARED_PREFIXES))
    assert "test/acc" in compared and "val/acc" in compared and "train/loss" in compared
    for key in compared:
        assert got["metrics"].get(key) == pytest.approx(whole["metrics"][key], abs=1e-6), key
    assert got["best"]["score"] == pytest.approx(whole["best"]["score"], abs=1e-6)
    # times: every segment counted up to the checkpoint the next one resumed from, then the last one
    assert got["fit_time_s"] > fit_before and got["wall_time_s"] > wall_before
    assert got["wall_time_s"] > got["fit_time_s"] > 0
    assert len(got["resumes"]) == len(kills)
    assert scalar_series(run_dir) == scalar_series(reference["run_dir"])


def test_sweep_job_killed_at_an_epoch_end_resumes_when_the_sweep_is_rerun(venv_bin, tmp_path):
    # job folders are named by the swept key only: cell=lstm, cell=gru
    sweep = ["-m", "cell=lstm,gru", *FULL]
    whole = tmp_path / "whole"
    result = cli(venv_bin, [*sweep, f"hydra.sweep.dir={whole}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    killed = tmp_path / "killed"
    # the basic launcher runs the jobs one after the other in this process: the first job dies
    first = cli(venv_bin, [*sweep, f"hydra.sweep.dir={killed}"], tmp_path, fault="train_epoch_end@8")
    assert first.returncode == -9
    rerun = cli(venv_bin, [*sweep, f"hydra.sweep.dir={killed}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    jobs = sorted(p.name for p in whole.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2 and jobs == sorted(p.name for p in killed.iterdir() if (p / "metrics.json").is_file())
    for job in jobs:
        a, b = record_of(whole / job), record_of(killed / job)
        assert b["status"] == "completed" and b["global_step"] == a["global_step"] == 16
        assert b["optimizer_steps_per_epoch"] == a["optimizer_steps_per_epoch"] == [8, 8]
        for key in ("test/acc", "test/loss", "val/acc", "hp/val_acc_best", "train/loss"):
            assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=1e-6), (job, key)
    # the first job (cell=lstm) was resumed once; the second started after the rerun
    assert len(record_of(killed / "cell=lstm")["resumes"]) == 1 and "resumes" not in record_of(killed / "cell=gru")


def test_half_written_last_checkpoint_is_named_and_nothing_is_lost(venv_bin, tmp_path):
    run_dir = tmp_path / "run"
    first = cli(venv_bin, [*FULL, f"hydra.run.dir={run_dir}"], tmp_path, fault="train_batch_end@4")
    assert first.returncode == -9
    last = run_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # as a writer without an atomic rename would leave it
    resumed = cli(venv_bin, [f"resume={run_dir}"], tmp_path)
    assert resumed.returncode == 2
    assert f"{last}: not a readable checkpoint" in resumed.stderr.strip().splitlines()[-1]
    assert last.read_bytes() == data[: len(data) // 2]  # the evidence is left as it was
    assert record_of(run_dir)["status"] in ("running", "failed")
