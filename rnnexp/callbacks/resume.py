"""What a checkpoint must carry, beyond Lightning's own state, for a resumed run to end exactly
where the uninterrupted run would have.

Lightning restores the weights, the optimizer, the schedulers, its loop counters and the best-
checkpoint bookkeeping. `ExactResume` adds, in every checkpoint:
  - every random-number stream (torch's CPU and CUDA generators, Python's, NumPy's): dropout
    draws the same masks after a resume;
  - the position in the epoch: a run resumed mid-epoch has its training sampler skip the batches
    already trained on (the order is a function of seed, epoch and rank, so what remains is the
    very batches the uninterrupted run saw next);
  - the run's clock: training and wall time summed over every segment the run was cut into;
  - the optimizer steps of each finished epoch, and the latest value of every logged metric (a
    run resumed after its last epoch trains nothing more, yet its record must hold them).
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytorch_lightning as pl
import torch

from rnnexp.records import finite_or_none


def rng_streams() -> dict:
    """Every generator a run draws from, as plain data and tensors (loads with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }


def restore_rng_streams(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("numpy") is not None:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def logged_batches_of(checkpoint: dict) -> int:
    """The training batches a checkpoint (as loaded) had trained on: the step from which the
    loggers of a run resumed from it write again."""
    for key, state in checkpoint.get("callbacks", {}).items():
        if key == ExactResume.__qualname__ or key.startswith(ExactResume.__qualname__ + "{"):
            return int(state.get("batches_total", 0))
    return 0


class ExactResume(pl.Callback):
    """Carries the state listed in the module docstring in every checkpoint, and restores it.

    Listed before the checkpoint writers in conf/callbacks/default.yaml: Lightning calls callbacks
    in that order, so a checkpoint written after a batch counts that batch.
    """

    def __init__(self):
        self.epoch, self.batches_done = 0, 0
        self.batches_total = 0  # training batches of the whole run: the loggers' step
        self.steps_per_epoch: list[int] = []  # optimizer steps of each finished epoch
        self._steps_at_epoch_start = 0
        self.earlier_fit_s = self.earlier_wall_s = 0.0  # earlier segments, from the checkpoint
        self.wall_started = time.time()  # this segment's start; rnnexp.training sets its own
        self._fit_started: float | None = None
        self.fit_metrics: dict[str, float] = {}  # restored latest values of the logged metrics
        self.resumed = False
        self._restored: dict | None = None

    # -- the clock ------------------------------------------------------------------------------
    def fit_seconds(self) -> float:
        running = time.time() - self._fit_started if self._fit_started is not None else 0.0
        return self.earlier_fit_s + running

    def wall_seconds(self) -> float:
        return self.earlier_wall_s + time.time() - self.wall_started

    def on_fit_start(self, trainer, pl_module):
        self._fit_started = time.time()

    def on_fit_end(self, trainer, pl_module):
        self.earlier_fit_s, self._fit_started = self.fit_seconds(), None

    # -- checkpoint state -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        metrics = {}
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            metrics = {k: finite_or_none(v) for k, v in trainer.callback_metrics.items()
                       if not k.endswith("_step")}
        return {"rng": rng_streams(), "epoch": self.epoch, "batches_done": self.batches_done,
                "batches_total": self.batches_total,
                "steps_per_epoch": list(self.steps_per_epoch), "steps_at_epoch_start": self._steps_at_epoch_start,
                "fit_time_s": self.fit_seconds(), "wall_time_s": self.wall_seconds(), "fit_metrics": metrics}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)
        self.resumed = True
        self.earlier_fit_s = float(state_dict.get("fit_time_s", 0.0))
        self.earlier_wall_s = float(state_dict.get("wall_time_s", 0.0))
        self.steps_per_epoch = list(state_dict.get("steps_per_epoch", []))
        self.batches_total = int(state_dict.get("batches_total", 0))
        self._steps_at_epoch_start = int(state_dict.get("steps_at_epoch_start", 0))
        self.fit_metrics = {k: v for k, v in state_dict.get("fit_metrics", {}).items() if v is not None}

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer  # state_dict() reads its callback_metrics
        if stage == "fit" and trainer.world_size > 1:
            # Each process chose whether to resume from the files it sees; they must agree, or the
            # first collective waits for ever.
            anyone = trainer.strategy.reduce_boolean_decision(self.resumed, all=False)
            everyone = trainer.strategy.reduce_boolean_decision(self.resumed, all=True)
            if anyone != everyone:
                raise RuntimeError(
                    f"rank {trainer.global_rank} {'found' if self.resumed else 'did not find'} checkpoints/"
                    "last.ckpt but another process did not agree: every process of a distributed run must "
                    "see the same run directory (a shared file system, not node-local disks)")

    def on_train_start(self, trainer, pl_module):
        # Lightning re-enters an interrupted epoch without calling on_train_epoch_start, and
        # draws the epoch's batches after this hook: the place to restore both.
        restored, self._restored = self._restored, None
        if restored is None:
            return
        if restored.get("rng") is not None:
            restore_rng_streams(restored["rng"])
        if restored["epoch"] == trainer.current_epoch:
            self.epoch, self.batches_done = trainer.current_epoch, int(restored["batches_done"])
            sampler = trainer.train_dataloader.sampler
            if not hasattr(sampler, "skip_batches"):
                raise RuntimeError(
                    f"resuming mid-epoch needs a training sampler that can skip the {self.batches_done} batches "
                    f"already trained on (rnnexp.data.loaders.EpochBatchSampler); this data module's "
                    f"{type(sampler).__name__} cannot, and would train them again")
            sampler.skip_batches = self.batches_done

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch, self.batches_done = trainer.current_epoch, 0
        self._steps_at_epoch_start = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches_done += 1
        self.batches_total += 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.steps_per_epoch.append(trainer.global_step - self._steps_at_epoch_start)
