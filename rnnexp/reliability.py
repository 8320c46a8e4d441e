"""Callbacks that make a run survivable: stop cleanly on divergence, checkpoint on Ctrl-C, and
resume mid-epoch on exactly the batches and random numbers the interrupted run would have used."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from rnnexp.errors import DivergenceError


class DivergenceGuard(pl.Callback):
    """Stop on a non-finite loss or weight, and keep non-finite weights out of every checkpoint.

    Every N-th optimizer step (N = check_every_n_steps), after backward and before `optimizer.step`,
    it tests one number: the module's running sum of this epoch's training losses
    (`running_loss_sum`; else the last batch's loss), which is inf or nan as soon as any loss since
    the last check was. One small op and one host sync per check, nothing on the other steps: the
    guard costs nothing measurable in a training epoch (`rnnexp-bench --only epoch`).

    A step with non-finite gradients but a finite loss makes the weights non-finite, so the next
    loss is too: the check after it catches that and reports the weights ("the weight norm") first.
    No non-finite weights reach a checkpoint: they are checked whenever a checkpoint is about to
    be written (any writer: last.ckpt, the best, Ctrl-C) and when training ends. With N > 1 the
    step reported is the one the divergence was found at, at most N - 1 steps after it began.
    """

    def __init__(self, check_every_n_steps: int = 1):
        self.every = max(1, int(check_every_n_steps))
        self._until_check = 1  # the first step is checked

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # A countdown of its own: reading trainer.global_step walks four Lightning objects
        self._until_check -= 1
        if self._until_check == 0:
            self._until_check = self.every
            self._check_losses(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        # Callbacks' epoch-end hooks run before the module's, which resets the running sum.
        self._check_losses(trainer, pl_module)

    def _check_losses(self, trainer, pl_module) -> None:
        stats = getattr(pl_module, "last_batch", None)
        checked = getattr(pl_module, "running_loss_sum", None)
        if checked is None:
            checked = stats[0] if stats is not None else None
        # A 0-dim tensor: one isfinite op says it all (no `.all()` op after it)
        if checked is None or bool(torch.isfinite(checked)):
            return
        # The weights first: non-finite weights (from an earlier step) make the loss non-finite too.
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))
        loss = stats[0] if stats is not None else checked
        value = float(loss) if not bool(torch.isfinite(loss).all()) else float(checked)
        raise DivergenceError(trainer.global_step, "the training loss", value, self.hint(trainer, pl_module))

    def on_train_end(self, trainer, pl_module):
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Called while the checkpoint is assembled, before anything is written: raising here keeps
        # non-finite weights (lr * grad = inf from finite gradients) out of every checkpoint file.
        self._check_weights(trainer, pl_module, list(pl_module.parameters()))

    def _check_weights(self, trainer, pl_module, params) -> None:
        norm = _total_norm(params)
        if not bool(torch.isfinite(norm)):
            raise DivergenceError(trainer.global_step, "the weight norm", float(norm), self.hint(trainer, pl_module))

    @staticmethod
    def hint(trainer, pl_module) -> str:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        return (f"lower optimizer.lr (now {lr:g}) or clip gradients with trainer.gradient_clip_val=1.0; "
                "the last good checkpoint is checkpoints/last.ckpt")


@torch.no_grad()
def _total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the tensors together (inf or nan when any element is)."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


class LastCheckpoint(pl.Callback):
    """Keep `checkpoints/last.ckpt` current: every `every_n_seconds` of training and/or every N
    optimizer steps, at every epoch boundary and at the end.

    Time is the default measure: a killed run loses at most that much work, and the cost of the
    writes stays the same small share of training however short the steps are (every 100 steps
    of a 20 ms step would spend a few percent of the run writing checkpoints).
    One writer for one file (two ModelCheckpoints with save_last would version each other's files
    as last-v1.ckpt). Lightning writes through an fsspec transaction: a temporary file renamed into
    place, so a kill mid-write leaves the previous last.ckpt intact.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0, every_n_seconds: float = 60.0):
        self.path = Path(dirpath) / "last.ckpt"
        self.every = int(every_n_train_steps)
        self.every_seconds = float(every_n_seconds)
        self._saved_at = time.monotonic()

    def _save(self, trainer):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: resumable
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer, pl_module):
        # the initial weights: a run that diverges on its first steps still has a good checkpoint
        if not self.path.is_file():
            self._save(trainer)
        self._saved_at = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._due(trainer):
            self._save(trainer)

    def _due(self, trainer) -> bool:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step > 0:
            return True
        if self.every_seconds <= 0:
            return False
        due = time.monotonic() - self._saved_at >= self.every_seconds
        # Saving is collective under DDP: every process follows rank 0's clock (free on one device).
        return bool(trainer.strategy.broadcast(due)) if trainer.world_size > 1 else due

    # Epoch boundaries are saved when the next epoch starts (and when training ends), not in
    # on_train_epoch_end: there, Lightning has not yet reset the epoch's metric states, and a
    # checkpoint would carry them into the next epoch's averages.
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)


class InterruptCheckpoint(pl.Callback):
    """On Ctrl-C, save `last.ckpt` before Lightning shuts down, so `resume=` loses nothing."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.interrupted = False

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            self.interrupted = True
            self.dirpath.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.dirpath / "last.ckpt", weights_only=False)


class ExactResume(pl.Callback):
    """Make a resumed run continue exactly where its checkpoint left it.

    - the global random-number generator (dropout) is saved with each checkpoint and restored;
    - the position in the epoch is saved too, and a run resumed mid-epoch has its training
      sampler skip the batches already trained on (the order is a function of seed and epoch,
      so what remains is the same batches the uninterrupted run saw).
    """

    def __init__(self):
        self.epoch, self.batches_done = 0, 0
        self._restored: dict | None = None

    def state_dict(self) -> dict:
        return {"torch_rng": torch.get_rng_state(), "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)

    def on_train_start(self, trainer, pl_module):
        # Lightning re-enters an interrupted epoch without calling on_train_epoch_start, and
        # draws the epoch's batches after this hook: the place to restore both.
        restored, self._restored = self._restored, None
        if restored is None:
            return
        if restored.get("torch_rng") is not None:
            torch.set_rng_state(restored["torch_rng"])
        if restored["epoch"] == trainer.current_epoch:
            self.epoch, self.batches_done = trainer.current_epoch, int(restored["batches_done"])
            sampler = getattr(trainer.train_dataloader, "sampler", None)
            if hasattr(sampler, "skip_batches"):
                sampler.skip_batches = self.batches_done

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch, self.batches_done = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Runs before LastCheckpoint's hook (conf/callbacks lists it first), so a checkpoint written
        # after this batch counts it; one written by Ctrl-C mid-batch does not.
        self.batches_done += 1


def is_finite_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
