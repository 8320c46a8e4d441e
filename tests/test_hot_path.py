"""What keeps the training step as cheap as a hand-written loop, pinned so it stays that way:
batches come out of tensors whole, nothing forces a host sync (`.item()`) every step, and the
bookkeeping that moved off the per-step path still produces the same numbers."""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
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
    # the metric is fed in batches of steps (rnnexp.lit.module.TRAIN_METRIC_EVERY): none is lost
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
    from rnnexp.callbacks.progress import StepPrinter
    from rnnexp.gradient_flow import GradientFlow
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


def test_lightnings_nvml_cuda_probe_is_dropped_only_where_nvml_cannot_load(monkeypatch):
    import rnnexp.lit.nvml as nvml

    # Lightning's import sets the variable; torch's optimizers then probe NVML on every step.
    monkeypatch.setenv(nvml.VARIABLE, "1")
    monkeypatch.setattr(nvml, "LIBRARY", "libc.so.6")  # a library that loads: NVML "present", keep it
    assert nvml.drop_futile_nvml_check() is False
    assert nvml.VARIABLE in os.environ
    monkeypatch.setattr(nvml, "LIBRARY", "librnnexp-no-such-nvml.so.1")  # absent: the probe is futile
    assert nvml.drop_futile_nvml_check() is True
    assert nvml.VARIABLE not in os.environ
    assert nvml.drop_futile_nvml_check() is False  # nothing left to drop; the user's other values stay
    monkeypatch.setenv(nvml.VARIABLE, "0")
    assert nvml.drop_futile_nvml_check() is False and os.environ[nvml.VARIABLE] == "0"


def test_training_step_signature_is_read_without_inspecting_the_function_each_step():
    from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature

    from rnnexp.lit.module import SequenceModel

    # Lightning asks this on every step; the stored signature must be the one of the code itself
    function = SequenceModel.training_step
    bare = types.FunctionType(function.__code__, function.__globals__)  # no stored signature
    assert function.__signature__ == inspect.signature(bare)
    assert list(function.__signature__.parameters) == ["self", "batch", "batch_idx"]
    module = SequenceModel.__new__(SequenceModel)
    assert is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)


def test_a_batch_already_on_the_device_is_passed_through_untouched(recwarn):
    datamodule = SequenceImageDataModule(source="bundled", batch_size=100)
    batch = (torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    assert datamodule.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = datamodule.transfer_batch_to_device([torch.zeros(1, dtype=torch.float64), "tag"], torch.device("cpu"), 0)
    assert moved[1] == "tag"  # anything else takes Lightning's general path
    # the hook lives on the data module, where Lightning looks first: no "overridden in the
    # LightningModule but a LightningDataModule was passed" warning in every run
    from pytorch_lightning.trainer.connectors.data_connector import _DataHookSelector

    from rnnexp.lit.module import SequenceModel

    selector = _DataHookSelector(SequenceModel.__new__(SequenceModel), datamodule)
    assert selector.get_instance("transfer_batch_to_device") is datamodule
    assert not [w for w in recwarn if "transfer_batch_to_device" in str(w.message)]


def test_empty_hook_bodies_are_told_from_real_ones_by_their_bytecode():
    from rnnexp.lit.hook_dispatch import has_empty_body

    def passes(trainer, pl_module):
        pass

    def documented(trainer, pl_module):
        """Only a docstring."""

    def ellipsis(trainer):
        ...

    def returns_none():
        return None

    def returns_one():
        return 1

    def acts(trainer):
        trainer.should_stop = True

    assert all(has_empty_body(fn) for fn in (passes, documented, ellipsis, returns_none))
    assert not any(has_empty_body(fn) for fn in (returns_one, acts, print, lambda: 0))
    assert has_empty_body(pl.Callback().on_before_backward)  # a bound method: its function is read
    assert not has_empty_body(pl.Callback().state_dict)  # returns {}


class _TinyRegression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.fx_names = []  # `_current_fx_name` as the module's own hooks see it

    def training_step(self, batch, batch_idx):  # called through the strategy
        self.fx_names.append(self._current_fx_name)
        return torch.nn.functional.mse_loss(self.layer(batch[0]).squeeze(-1), batch[1])

    def on_before_zero_grad(self, optimizer):  # a module hook with a body: still called
        self.fx_names.append(self._current_fx_name)
        self.log("hooked", 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(12, 3), torch.randn(12))
        return torch.utils.data.DataLoader(data, batch_size=4)


class _HookRecorder(pl.Callback):
    """Records each per-step hook it implements, with the module's `_current_fx_name` then."""

    def __init__(self):
        self.calls = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.calls.append(("on_train_batch_start", pl_module._current_fx_name, batch_idx))

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls.append(("on_before_backward", pl_module._current_fx_name, float(loss.detach())))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls.append(("on_before_optimizer_step", pl_module._current_fx_name, type(optimizer).__name__))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls.append(("on_train_batch_end", pl_module._current_fx_name, batch_idx))


class _EmptyHooks(pl.Callback):
    def on_after_backward(self, trainer, pl_module):
        """Overridden, but empty: as good as not implemented."""


@pytest.fixture
def dispatch_restored(monkeypatch):
    """Whatever Lightning's dispatch functions are now, they are again after the test."""
    from pytorch_lightning.trainer import call

    for name in ("_call_callback_hooks", "_call_lightning_module_hook", "_call_strategy_hook"):
        monkeypatch.setattr(call, name, getattr(call, name))
    return call


def _fit_recording_calls(profiler, skip_empty) -> tuple[list, set, pl.Trainer]:
    """Fit _TinyRegression for 3 steps: the recorder's calls then the module's fx names, the code objects
    Python entered, the trainer."""
    import sys

    from rnnexp.lit import hook_dispatch

    (hook_dispatch.install if skip_empty else hook_dispatch.uninstall)()
    torch.manual_seed(0)
    recorder = _HookRecorder()
    trainer = pl.Trainer(max_steps=3, profiler=profiler, callbacks=[recorder, _EmptyHooks()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    entered = set()

    def watch(frame, event, arg):
        if event == "call":
            entered.add(frame.f_code)

    module = _TinyRegression()
    sys.setprofile(watch)
    try:
        trainer.fit(module)
    finally:
        sys.setprofile(None)
    return recorder.calls + module.fx_names, entered, trainer


def test_rnnexp_trainers_skip_empty_hooks_and_call_the_rest_exactly_as_lightning_does(dispatch_restored):
    from pytorch_lightning.strategies import Strategy

    from rnnexp.lit import hook_dispatch
    from rnnexp.lit.profiler import NoProfiler

    lightning_calls, lightning_entered, _ = _fit_recording_calls(NoProfiler(), skip_empty=False)
    rnnexp_calls, rnnexp_entered, trainer = _fit_recording_calls(NoProfiler(), skip_empty=True)

    # 4 callback hooks x 3 steps, same order, arguments and _current_fx_name; then the module's
    assert rnnexp_calls == lightning_calls and len(lightning_calls) == 12 + 6
    assert lightning_calls[12:] == ["training_step", "on_before_zero_grad"] * 3
    assert trainer.callback_metrics["hooked"] == 1.0  # a module hook with a body still runs
    empty = {pl.Callback.on_before_zero_grad.__code__, _EmptyHooks.on_after_backward.__code__,
             pl.LightningModule.on_after_backward.__code__, Strategy.on_train_batch_start.__code__}
    assert empty <= lightning_entered  # Lightning calls them every step...
    assert not empty & rnnexp_entered  # ...rnnexp's trainers do not
    assert {hook_dispatch.call_callback_hooks.__code__, hook_dispatch.call_lightning_module_hook.__code__,
            hook_dispatch.call_strategy_hook.__code__} <= rnnexp_entered


def test_a_real_profiler_still_sees_every_hook_lightning_calls(dispatch_restored):
    from pytorch_lightning.profilers import SimpleProfiler

    calls, _, trainer = _fit_recording_calls(SimpleProfiler(), skip_empty=True)
    actions = set(trainer.profiler.recorded_durations)
    assert "[Callback]_EmptyHooks.on_after_backward" in actions  # empty, recorded: Lightning's path
    assert "[LightningModule]_TinyRegression.on_after_backward" in actions
    assert "[Strategy]SingleDeviceStrategy.on_train_batch_start" in actions
    assert len(calls) == 12 + 6


def test_monitoring_callbacks_are_chosen_as_lightning_chooses_them():
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from rnnexp.lit.hook_dispatch import call_callback_hooks
    from rnnexp.lit.profiler import NoProfiler

    seen = []

    class Monitor(ModelCheckpoint):
        def on_validation_end(self, trainer, pl_module):
            seen.append(("monitor", pl_module._current_fx_name))

    class Other(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.append(("other", pl_module._current_fx_name))

    module = SimpleNamespace(_current_fx_name="validation_step")
    trainer = SimpleNamespace(profiler=NoProfiler(), lightning_module=module, callbacks=[Other(), Monitor()])
    for monitoring in (True, False, None):
        call_callback_hooks(trainer, "on_validation_end", monitoring_callbacks=monitoring)
    assert seen == [("monitor", "on_validation_end"), ("other", "on_validation_end"),
                    ("other", "on_validation_end"), ("monitor", "on_validation_end")]
    assert module._current_fx_name == "validation_step"  # restored after the hooks


def test_build_trainer_routes_lightnings_hook_calls_through_rnnexp(make_cfg, dispatch_restored):
    from rnnexp.build import build_trainer
    from rnnexp.lit import hook_dispatch

    hook_dispatch.uninstall()
    build_trainer(make_cfg([]), [], [], False)
    call = dispatch_restored
    assert call._call_callback_hooks is hook_dispatch.call_callback_hooks
    assert call._call_lightning_module_hook is hook_dispatch.call_lightning_module_hook
    assert call._call_strategy_hook is hook_dispatch.call_strategy_hook


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
