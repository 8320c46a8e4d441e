"""Gradient clipping acts on the true (unscaled) gradient under a loss-scaling precision plugin.

Under trainer.precision=16-mixed Lightning's MixedPrecision plugin multiplies the loss by a scale
before the backward pass and divides it back out of the gradients inside `optimizer.step()`:
closure, `scaler.unscale_`, the `on_before_optimizer_step` hooks, (automatic optimisation only)
`configure_gradient_clipping`, `scaler.step`. A clip must come after the unscaling, or it clips a
gradient `scale` times too large. Here that plugin runs on the CPU with a real GradScaler (scale
2**16) and float64 numbers instead of float16 autocast (`LossScaledDouble`), so each update's
unscaled gradient is bit for bit that of the plain `trainer.precision=64-true` run: the clipped
norm and the weights after training must be those of that run, for every BPTT strategy.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.plugins.precision import DoublePrecision, MixedPrecision

from rnnexp.build import build_datamodule, build_module, build_trainer
from rnnexp.lit.profiler import NoProfiler

# A small problem (tanh RNN, 4 units, plain SGD), one batch of 6 sequences, one epoch.
BASE = ["debug=fast", "threads=1", "cell=rnn", "model.hidden_size=4", "optimizer=sgd", "optimizer.lr=0.5",
        "trainer.limit_val_batches=0", "+trainer.enable_checkpointing=false",
        "+trainer.enable_model_summary=false", "data.limit_train_samples=0",
        "data.train_size=6", "data.batch_size=6", "data.val_size=2", "data.test_size=2"]
COPY = ["data=copy_memory", "data.seq_len=3"]  # 23 steps, a label at each: several updates per batch
ADDING = ["data=adding", "data.seq_len=9"]  # 9 steps, one target at the end
CLIP = 1e-3  # below every update's gradient norm here, so the clip acts on each
SCALE = 2.0 ** 16  # GradScaler's default initial scale; a power of two, so scaling is exact

CASES = [  # task, bptt overrides, optimizer steps in the epoch
    (COPY, ["bptt=truncated", "bptt.k1=6", "bptt.k2=8"], 4),
    (ADDING, ["bptt=truncated", "bptt.k1=3"], 1),
    (COPY, ["bptt=lookback", "bptt.k1=4"], 1),
    (ADDING, ["bptt=lookback", "bptt.k1=4"], 1),
    (COPY, ["bptt=full"], 1),  # Lightning's own clipping (trainer.gradient_clip_val)
    (ADDING, ["bptt=full"], 1),
]
IDS = ["truncated-per_step", "truncated-final_target", "lookback-per_step", "lookback-final_target",
       "full-per_step", "full-final_target"]


def global_norm(optimizer) -> float:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))


def clipped(norm: float, clip: float = CLIP) -> float:
    """The global norm after torch.nn.utils.clip_grad_norm_(max_norm=clip) of a gradient of norm `norm`."""
    return norm * min(1.0, clip / (norm + 1e-6))


class RecordingScaler(torch.amp.GradScaler):
    """A real GradScaler that notes, in order, each unscaling and each optimizer step with the
    gradients' global norm at that moment (after unscaling; and in `scaled`, before)."""

    def __init__(self):
        super().__init__("cpu", init_scale=SCALE)
        self.events: list[tuple[str, float]] = []
        self.scaled: list[float] = []

    def unscale_(self, optimizer):
        self.scaled.append(global_norm(optimizer))
        super().unscale_(optimizer)
        self.events.append(("unscale", global_norm(optimizer)))

    def step(self, optimizer, *args, **kwargs):
        self.events.append(("step", global_norm(optimizer)))
        return super().step(optimizer, *args, **kwargs)


class LossScaledDouble(MixedPrecision):
    """trainer.precision=16-mixed's optimizer step (Lightning's own MixedPrecision, with a real
    GradScaler: loss scaled before backward, unscaled in optimizer_step before the hooks), with the
    numbers of trainer.precision=64-true (module, inputs and default dtype float64, no autocast)."""

    def __init__(self, scaler: RecordingScaler):
        super().__init__("16-mixed", "cpu", scaler=scaler)
        self.float64 = DoublePrecision()

    def convert_module(self, module):
        return self.float64.convert_module(module)

    def convert_input(self, data):
        return self.float64.convert_input(data)

    def tensor_init_context(self):
        return self.float64.tensor_init_context()

    def module_init_context(self):
        return self.float64.module_init_context()

    def forward_context(self):
        return self.float64.forward_context()


class StepNorms(pl.Callback):
    """The gradients' global norm as each optimizer step used them (a torch step post-hook: after
    everything Lightning does around the step)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_start(self, trainer, pl_module):
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(lambda opt, args, kwargs: self.norms.append(global_norm(opt)))


def build(make_cfg, overrides):
    cfg = make_cfg(BASE + [f"trainer.gradient_clip_val={CLIP}"] + overrides, shrink=False)
    torch.manual_seed(cfg.seed)  # the same initial weights for every run
    datamodule = build_datamodule(cfg).prepare()
    return cfg, datamodule, build_module(cfg, datamodule.task)


def fit_float64(make_cfg, overrides):
    """The plain run, trainer.precision=64-true, through build_trainer: (module, trainer, step norms)."""
    cfg, datamodule, module = build(make_cfg, overrides + ["trainer.precision=64-true"])
    norms = StepNorms()
    trainer = build_trainer(cfg, [norms], [], manual_optimization=not module.automatic_optimization)
    trainer.fit(module, datamodule=datamodule)
    return module, trainer, norms.norms


def fit_loss_scaled(make_cfg, overrides):
    """The same run under LossScaledDouble: (module, trainer, its RecordingScaler, step norms).

    build_trainer's Trainer with the plugin in place of trainer.precision and trainer.plugins (Lightning takes one or
    the other); trainer.gradient_clip_val goes to Lightning under automatic optimisation only, and
    the NoProfiler is rnnexp's, as build_trainer does."""
    cfg, datamodule, module = build(make_cfg, overrides)
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in ("_target_", "precision", "gradient_clip_val", "profiler", "plugins"):
        node.pop(key)
    if module.automatic_optimization:
        node["gradient_clip_val"] = CLIP
    scaler, norms = RecordingScaler(), StepNorms()
    trainer = pl.Trainer(**node, plugins=[LossScaledDouble(scaler)], callbacks=[norms], logger=False,
                         profiler=NoProfiler())
    trainer.fit(module, datamodule=datamodule)
    assert scaler.get_scale() == SCALE  # no step skipped for an overflow
    return module, trainer, scaler, norms.norms


@pytest.mark.parametrize("task, bptt, steps", CASES, ids=IDS)
def test_clip_acts_after_unscaling_for_every_strategy(make_cfg, task, bptt, steps):
    module, trainer, scaler, step_norms = fit_loss_scaled(make_cfg, task + bptt)
    assert trainer.global_step == steps
    events = scaler.events
    # the backward pass really ran on the scaled loss
    assert scaler.scaled == pytest.approx([SCALE * norm for _, norm in events[::2]], rel=1e-12, abs=0.0)
    # unscale -> clip -> step, once per optimizer step: the step sees the unscaled gradient clipped
    # once at CLIP (clipped twice, or before unscaling, its norm would be another)
    assert [name for name, _ in events] == ["unscale", "step"] * steps
    for (_, unscaled), (_, stepped) in zip(events[::2], events[1::2]):
        assert unscaled > CLIP  # the clip has something to do
        assert stepped == pytest.approx(clipped(unscaled), rel=1e-9, abs=0.0)
    assert step_norms == pytest.approx([norm for _, norm in events[1::2]], rel=1e-12, abs=0.0)

    # the same numbers as without a loss scale: gradients, clipped norms, trained weights
    plain, plain_trainer, plain_norms = fit_float64(make_cfg, task + bptt)
    assert plain_trainer.global_step == steps
    assert plain_norms == pytest.approx(step_norms, rel=1e-12, abs=0.0)
    for (name, value), expected in zip(module.named_parameters(), plain.parameters()):
        torch.testing.assert_close(value.detach(), expected.detach(), rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_mixed_on_cpu_trains_with_the_clip_under_truncation(make_cfg):
    # bf16-mixed has no loss scale (Lightning's MixedPrecision with scaler None): the clip still
    # acts in on_before_optimizer_step, on float32 gradients, once per update.
    cfg, datamodule, module = build(make_cfg, COPY + ["bptt=truncated", "bptt.k1=6", "bptt.k2=8",
                                                      "trainer.precision=bf16-mixed", "trainer.max_epochs=2"])
    norms = StepNorms()
    trainer = build_trainer(cfg, [norms], [], manual_optimization=True)
    trainer.fit(module, datamodule=datamodule)
    assert isinstance(trainer.precision_plugin, MixedPrecision) and trainer.precision_plugin.scaler is None
    assert trainer.global_step == 8 and len(norms.norms) == 8
    assert norms.norms == pytest.approx([CLIP] * 8, rel=1e-4)
    assert math.isfinite(float(module.last_batch[0]))
    assert all(torch.isfinite(p).all() for p in module.parameters())
