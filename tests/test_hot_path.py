"""What keeps the training step as cheap as a hand-written loop, pinned so it stays that way:
batches come out of tensors whole, nothing forces a host sync (`.item()`) every step, and the
bookkeeping that moved off the per-step path still produces the same numbers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from rnnexp.data.images import SequenceImageDataModule
from rnnexp.data.loaders import InMemorySequences
from rnnexp.errors import DivergenceError
from rnnexp.training import train

SMALL = ["model.hidden_size=8", "data.limit_train_samples=0", "data.batch_size=16", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1", "trainer.log_every_n_steps=50"]


def test_training_loader_indexes_the_tensors_once_per_batch_not_once_per_sample(monkeypatch):
    calls = []
    original = InMemorySequences.__getitem__

    def counting(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(InMemorySequences, "__getitem__", counting)
    loader = SequenceImageDataModule(source="bundled", batch_size=100).prepare().train_dataloader()
    batches = list(loader)
    assert len(calls) == len(batches) == len(loader) == 36  # 3600 training sequences
    assert all(isinstance(index, torch.Tensor) and len(index) == 100 for index in calls)
    x, y = batches[0]
    assert x.shape == (100, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


class _ItemCounter(pl.Callback):
    """Counts Tensor.item() calls between the first training batch and the end of the training
    epoch's last batch (Lightning turns every progress-bar metric logged on_step into a number with
    .item() after every batch; a per-step .item() is a host sync per step on a GPU).

    torch.optim's own are left out: Adam reads its step counters with .item() (CPU tensors, so no
    device sync), in a hand-written loop just the same."""

    def __init__(self, monkeypatch):
        self.monkeypatch, self.count, self.steps = monkeypatch, 0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            original = torch.Tensor.item

            def counting(tensor):
                if "torch/optim/" not in sys._getframe(1).f_code.co_filename:
                    self.count += 1
                return original(tensor)

            self.monkeypatch.setattr(torch.Tensor, "item", counting)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps = batch_idx + 1
        if self.steps == trainer.num_training_batches:
            self.monkeypatch.undo()


@pytest.mark.parametrize("progress_bar", [False, True])
def test_training_steps_do_not_call_item_every_step(make_cfg, monkeypatch, progress_bar):
    cfg = make_cfg([*SMALL, "trainer.limit_train_batches=60", f"trainer.enable_progress_bar={progress_bar}"])
    counter = _ItemCounter(monkeypatch)
    import rnnexp.build

    build_callbacks = rnnexp.build.build_callbacks
    monkeypatch.setattr(rnnexp.build, "build_callbacks", lambda c: [*build_callbacks(c), counter])
    train(cfg)
    assert counter.steps == 60
    # the loggers write at step 50 (log_every_n_steps) and the bar redraws every 20 steps: a few
    # conversions, nothing per step
    assert counter.count <= 6, f"{counter.count} .item() calls in {counter.steps} training steps"


def test_epoch_training_loss_and_accuracy_are_over_every_sample_of_the_epoch(make_cfg, monkeypatch):
    seen = []

    class StepLosses(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss, prediction, target = pl_module.last_batch
            seen.append((float(loss), len(target), int((prediction.argmax(-1) == target).sum())))

    import rnnexp.build

    build_callbacks = rnnexp.build.build_callbacks
    monkeypatch.setattr(rnnexp.build, "build_callbacks", lambda c: [*build_callbacks(c), StepLosses()])
    # 3600 / 256 = 14 batches, the last of 16 sequences: unequal weights
    record = train(make_cfg([*SMALL, "data.batch_size=256", "trainer.limit_train_batches=1.0"]))
    samples = sum(n for _, n, _ in seen)
    expected = sum(loss * n for loss, n, _ in seen) / samples
    assert len(seen) == 15 and seen[-1][1] == 16
    assert record["metrics"]["train/loss"] == pytest.approx(expected, rel=1e-5)
    assert record["metrics"]["train/loss_epoch"] == pytest.approx(expected, rel=1e-5)
    # the metric sees every batch of the epoch, the short last one too
    assert record["metrics"]["train/acc"] == pytest.approx(sum(c for _, _, c in seen) / samples, abs=1e-6)


def test_progress_bar_shows_the_latest_training_loss(make_cfg):
    from rnnexp.build import build_callbacks, build_datamodule, build_module
    from rnnexp.callbacks.progress import TrainingProgressBar

    cfg = make_cfg(["trainer.enable_progress_bar=true", "model.hidden_size=8"])
    bars = [cb for cb in build_callbacks(cfg) if isinstance(cb, TrainingProgressBar)]
    assert len(bars) == 1 and bars[0].refresh_rate == 20
    datamodule = build_datamodule(cfg).prepare()
    module = build_module(cfg, datamodule.task)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         callbacks=[bars[0]], enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    shown = bars[0].get_metrics(trainer, module)
    assert shown["train/loss_step"] == pytest.approx(float(module.last_batch[0]))


def test_divergence_checked_rarely_still_keeps_non_finite_weights_out_of_checkpoints(make_cfg):
    # weights overflow on the first step (lr = 1e38); the per-step check is off for 1000 steps, but
    # every checkpoint write checks the weights first
    cfg = make_cfg(["cell=rnn", "optimizer=sgd", "optimizer.lr=1e38", "callbacks.divergence_guard.check_every_n_steps=1000",
                    "callbacks.periodic_checkpoint.every_n_train_steps=2"])
    with pytest.raises(DivergenceError, match=r"the weight norm is (inf|nan)"):
        train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "diverged"
    checkpoint = torch.load(record["last_good_checkpoint"], weights_only=True)
    assert checkpoint["global_step"] == 0  # the initial weights: the only finite ones there were
    assert all(torch.isfinite(t).all() for k, t in checkpoint["state_dict"].items() if k.startswith(("encoder.", "head.")))


def test_switched_off_callbacks_are_left_out_and_hooks_are_not_profiled_unless_asked(make_cfg):
    # Lightning calls every hook of every callback at every step, and wraps each call in the
    # profiler's context: callbacks that do nothing are not built, and no profiler means no wrapper
    from pytorch_lightning.profilers import SimpleProfiler

    from rnnexp.build import build_callbacks, build_trainer
    from rnnexp.callbacks.gradient_flow import GradientFlow
    from rnnexp.callbacks.progress import StepPrinter
    from rnnexp.lit.profiler import NoProfiler

    kinds = {type(cb) for cb in build_callbacks(make_cfg([]))}
    assert StepPrinter not in kinds and GradientFlow not in kinds
    on = make_cfg(["callbacks.step_printer.every_n_steps=5", "callbacks.gradient_flow.every_n_steps=5"])
    assert {StepPrinter, GradientFlow} <= {type(cb) for cb in build_callbacks(on)}

    assert isinstance(build_trainer(make_cfg([]), [], [], False).profiler, NoProfiler)
    assert isinstance(build_trainer(make_cfg(["trainer.profiler=simple"]), [], [], False).profiler, SimpleProfiler)


class _GuardedModule(torch.nn.Module):
    """What DivergenceGuard reads from a module: parameters, the last batch, the running loss sum."""

    def __init__(self, last_loss: float, running_sum: float, weight: float = 1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((3,), weight))
        self.last_batch = (torch.tensor(last_loss), None, None)
        self.running_loss_sum = torch.tensor(running_sum)


class _Trainer:
    global_step, optimizers = 7, []


def test_divergence_guard_catches_a_non_finite_loss_from_any_step_since_its_last_check():
    from rnnexp.callbacks.divergence import DivergenceGuard

    guard = DivergenceGuard(check_every_n_steps=1)
    guard.on_before_optimizer_step(_Trainer(), _GuardedModule(0.5, 12.0), None)  # all finite: nothing
    # the last batch is fine, an earlier one since the last check was not: the running sum says so
    with pytest.raises(DivergenceError, match=r"diverged at step 7: the training loss is inf"):
        guard.on_before_optimizer_step(_Trainer(), _GuardedModule(0.5, float("inf")), None)
    with pytest.raises(DivergenceError, match=r"the training loss is nan"):
        guard.on_train_epoch_end(_Trainer(), _GuardedModule(float("nan"), float("nan")))
    # non-finite weights are named first: they are the cause, the loss only shows it
    with pytest.raises(DivergenceError, match=r"the weight norm is (inf|nan)"):
        guard.on_before_optimizer_step(_Trainer(), _GuardedModule(float("nan"), float("nan"), weight=float("inf")), None)
    # every 4th step here (the 1st, 5th, 9th, ...): nothing is looked at in between, and the
    # divergence is caught at the next check
    guard = DivergenceGuard(check_every_n_steps=4)
    guard.on_before_optimizer_step(_Trainer(), _GuardedModule(0.5, 3.0), None)
    for _ in range(3):
        guard.on_before_optimizer_step(_Trainer(), _GuardedModule(0.5, float("nan")), None)
    with pytest.raises(DivergenceError, match=r"the training loss is nan"):
        guard.on_before_optimizer_step(_Trainer(), _GuardedModule(0.5, float("nan")), None)


@pytest.mark.parametrize("nvml_loads", [False, True])
def test_lightnings_nvml_cuda_probe_is_dropped_only_where_nvml_cannot_load(make_cfg, monkeypatch, nvml_loads):
    # Lightning's import sets the variable; torch's optimizers then ask NVML on every step, which
    # where NVML is absent only tries to load it again and falls back to the CUDA runtime anyway
    import ctypes

    from rnnexp.build import configure_torch

    cfg = make_cfg([])
    variable = "PYTORCH_NVML_BASED_CUDA_CHECK"
    loaded = []

    def cdll(name, *args, **kwargs):
        loaded.append(name)
        if not nvml_loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setenv(variable, "1")
    configure_torch(cfg)
    assert loaded == ["libnvidia-ml.so.1"]
    assert (variable in os.environ) is nvml_loads  # kept where NVML is there to answer
    monkeypatch.setenv(variable, "0")  # the user's other values stay, and nothing is loaded
    configure_torch(cfg)
    assert os.environ[variable] == "0" and len(loaded) == 1


def test_a_batch_already_on_the_device_is_passed_through_untouched(recwarn):
    datamodule = SequenceImageDataModule(source="bundled", batch_size=100)
    batch = (torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    assert datamodule.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = datamodule.transfer_batch_to_device([torch.zeros(1, dtype=torch.float64), "tag"], torch.device("cpu"), 0)
    assert moved[1] == "tag"  # anything else takes Lightning's general path
    # the hook lives on the data module, where Lightning looks first, and only there: no
    # "overridden in the LightningModule but a LightningDataModule was passed" warning in every run
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from rnnexp.lit.module import SequenceModel

    assert is_overridden("transfer_batch_to_device", datamodule)
    assert not is_overridden("transfer_batch_to_device", SequenceModel.__new__(SequenceModel))
    assert not [w for w in recwarn if "transfer_batch_to_device" in str(w.message)]


def test_runs_flush_float32_denormals_to_zero_unless_told_not_to(make_cfg):
    # Backpropagating through long sequences drives gradients below float32's smallest normal
    # number, where x86 CPUs compute many times slower (rnnexp-bench --only denormals)
    from rnnexp.build import configure_torch

    try:
        configure_torch(make_cfg(["flush_denormal=false"]))
        # below ~1.2e-38: only a denormal holds it (made now: with flushing on, even the float
        # conversion would give 0)
        denormal = torch.tensor(1e-39)
        assert (denormal * 1.0).item() > 0  # IEEE gradual underflow
        configure_torch(make_cfg([]))
        assert (denormal * 1.0).item() == 0.0  # the default: flushed
    finally:
        configure_torch(make_cfg([]))  # what every run in this process sets


@pytest.mark.parametrize("flush", [True, False])
def test_a_fresh_process_flushes_denormals_in_every_intra_op_thread(flush):
    # The flag is per CPU thread and threads take it from the thread that creates them: set before
    # torch's first parallel op, as rnnexp-train sets it, it holds across the intra-op threads
    import subprocess

    script = f"""
import torch
from rnnexp.bench.config import compose_run_config
from rnnexp.build import configure_torch
configure_torch(compose_run_config(["flush_denormal={str(flush).lower()}"], "/tmp"))
x = torch.full((4_000_000,), 1e-39)  # split across the threads by at::parallel_for
print(torch.get_num_threads(), int((x * 1.0).count_nonzero()))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, nonzero = map(int, done.stdout.split()[-2:])
    assert threads == 2
    assert nonzero == (0 if flush else 4_000_000)


def test_torchmetrics_mean_metric_lacks_what_the_running_loss_sum_does():
    # Why the module keeps its own sum (lit/module.py): should torchmetrics change either of these,
    # MeanMetric can replace it. A nan must stay in the sum (DivergenceGuard tests it) and the
    # mean must weight each batch by its size.
    import torchmetrics

    keeps_nan = torchmetrics.MeanMetric(nan_strategy="disable")
    keeps_nan.update(torch.tensor(1.0), 3)
    keeps_nan.update(torch.tensor(2.0), 1)
    assert float(keeps_nan.compute()) == pytest.approx(1.5)  # unweighted: (1 + 2) / 2, not 1.25
    for strategy in ("warn", "ignore"):
        drops_nan = torchmetrics.MeanMetric(nan_strategy=strategy)
        drops_nan.update(torch.tensor(1.0), 3)
        drops_nan.update(torch.tensor(float("nan")), 1)
        assert float(drops_nan.compute()) == 1.0  # the nan is gone: no divergence to see
