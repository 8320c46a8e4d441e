"""Callbacks with nothing to do while the training loop runs sit it out.

Lightning calls every hook of every callback on every training step (six or so per step, each
a few microseconds, more with the caches cold after a forward and backward pass) whether the
callback implements it or not. Some act only outside the loop: Lightning's model summary (at fit
start), rnnexp's test figures (while testing). `SequenceModel` takes those out of
`trainer.callbacks` when training starts and puts the list back, in its order, when it ends.
"""

from __future__ import annotations

import pytorch_lightning as pl

# Every hook Lightning can call between on_train_start and on_train_end (validation included),
# the checkpoint and exception ones, which can come at any moment, and the ones after a run that
# ends in an exception (the list is not restored then).
HOOKS_WHILE_TRAINING = (
    "on_train_epoch_start", "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
    "on_validation_start", "on_validation_end", "on_validation_epoch_start", "on_validation_epoch_end",
    "on_validation_batch_start", "on_validation_batch_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_save_checkpoint", "on_load_checkpoint", "state_dict", "load_state_dict", "on_exception",
    "on_train_end", "on_fit_end", "teardown",
)


def idle_while_training(callback: pl.Callback) -> bool:
    """True when the callback's class implements none of HOOKS_WHILE_TRAINING."""
    cls = type(callback)
    return not any(getattr(cls, hook) is not getattr(pl.Callback, hook) for hook in HOOKS_WHILE_TRAINING)


class TrainingLoopCallbacks:
    """Takes the idle callbacks out of a trainer's list for the training loop, then restores it."""

    def __init__(self):
        self.saved: list | None = None

    def start(self, trainer) -> None:
        self.saved = list(trainer.callbacks)
        trainer.callbacks = [cb for cb in self.saved if not idle_while_training(cb)]

    def end(self, trainer) -> None:
        if self.saved is not None:
            trainer.callbacks, self.saved = self.saved, None
