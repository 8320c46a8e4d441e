"""`checkpoints/last.ckpt`, the checkpoint `rnnexp-train resume=<run dir>` continues from.

Written only where the whole training state is at a boundary Lightning knows how to restart from:
  - when training starts (the initial weights: a run that diverges at once still has one),
  - after a training batch, every N optimizer steps and/or every `every_n_seconds` of training,
  - at the end of every epoch, after validation, the module's epoch-end hook (epoch metrics reset,
    epoch-interval schedulers stepped) and the best-checkpoint writer,
  - when training ends,
  - on Ctrl-C: the first press asks the run to stop at the next of those boundaries, writes
    last.ckpt there and exits as interrupted; a second press stops at once,
  - on SIGTERM (SLURM pre-emption, `scontrol requeue`, `scancel`): Lightning stops training after
    the batch it arrived in; last.ckpt is written at the end of that batch first, as for Ctrl-C
    (rnnexp.slurm says which layer handles which signal).

Lightning's own callbacks lack what this needs, so it is one class of its own:
ModelCheckpoint writes nothing when training starts, writes last.ckpt at an epoch end only
together with a top-k file, and under manual optimisation (truncated BPTT makes several
optimizer steps per batch) tests `global_step % N == 0` at batch end, which skips multiples of N;
OnExceptionCheckpoint saves wherever Ctrl-C lands, mid-batch, so a resumed run would repeat that
batch's optimizer steps. (tests/test_resume_matrix.py pins each behaviour.)

Every decision that all processes of a distributed run must share (does the file exist, is a save
due, was Ctrl-C pressed) is taken on global rank 0 and broadcast, as Lightning's own callbacks do:
a rank that decided alone could wait in the save's barrier for ever.
Lightning writes through an fsspec transaction, a temporary file renamed into place, so a kill
during a write leaves the previous last.ckpt whole.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from pytorch_lightning.callbacks import Checkpoint

from rnnexp.callbacks.cadence import StepCadence

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class LastCheckpoint(Checkpoint):
    """Keep `<dirpath>/last.ckpt` current (module docstring).

    A `Checkpoint` subclass, so Lightning calls its epoch-end hook after the LightningModule's:
    the saved state is the one the next epoch starts from.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0, every_n_seconds: float = 60.0):
        self.path = Path(dirpath) / LAST
        self.cadence = StepCadence(every_n_train_steps)
        self.every_seconds = float(every_n_seconds)
        self._saved_at = time.monotonic()
        self._deferred = False  # a save was due after a batch that validation followed
        self._stop_requested = False  # set by the first Ctrl-C
        self.interrupted = False  # the run stopped on Ctrl-C (read by rnnexp.training for the record)
        self._previous_sigint = None

    # -- writing --------------------------------------------------------------------------------
    def _save(self, trainer) -> None:
        for logger in trainer.loggers:  # what is logged up to here is on disk before the checkpoint is
            logger.save()
        trainer.save_checkpoint(self.path, weights_only=False)  # full state: resumable
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer, pl_module):
        if not trainer.strategy.broadcast(self.path.is_file()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._save(trainer)
        self._saved_at = time.monotonic()
        self._catch_ctrl_c()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.cadence.batch_started(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        due = self.cadence.due(trainer) or (
            self.every_seconds > 0 and time.monotonic() - self._saved_at >= self.every_seconds)
        stop = self._stop_requested or trainer.received_sigterm
        if trainer.world_size > 1:  # every process follows rank 0's clock, Ctrl-C and SIGTERM
            due, stop = trainer.strategy.broadcast((due, stop))
        if batch_idx + 1 >= trainer.num_training_batches or _validation_follows(trainer, batch_idx):
            # Validation follows this batch (and, after the epoch's last batch, the epoch-end
            # save): Lightning restarts a checkpoint written here after the batch but skips that
            # validation, so the save waits for the next batch.
            self._deferred = self._deferred or due
            self._stop_requested = stop
            return
        if due or stop or self._deferred:
            self._save(trainer)
            self._deferred = False
        if stop:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._save(trainer)
        self._deferred = False
        stop = self._stop_requested or trainer.received_sigterm
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop)
        if stop:
            self._stop(trainer)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)
        self._release_ctrl_c()

    def on_exception(self, trainer, pl_module, exception):
        # a second Ctrl-C (or one before training started) stops at once: last.ckpt stays as it was;
        # so does a SIGTERM that arrived after this batch's check (Lightning then stops the run itself)
        self.interrupted = self.interrupted or isinstance(exception, KeyboardInterrupt) or trainer.received_sigterm
        self._release_ctrl_c()

    # -- Ctrl-C ---------------------------------------------------------------------------------
    def _catch_ctrl_c(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # SIGINT ignored (a background job) or handled by someone else: leave it so

        def request_stop(signum, frame):
            self._stop_requested = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
            log.warning("Ctrl-C: saving last.ckpt at the end of this batch, then stopping "
                        "(press again to stop at once, losing the work since the last checkpoint)")

        self._previous_sigint = signal.signal(signal.SIGINT, request_stop)

    def _release_ctrl_c(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _stop(self, trainer) -> None:
        self.interrupted = True
        self._release_ctrl_c()
        raise KeyboardInterrupt(f"stopped on Ctrl-C or SIGTERM at step {trainer.global_step}; last.ckpt saved")


def _validation_follows(trainer, batch_idx: int) -> bool:
    """Whether Lightning validates right after this training batch (trainer.val_check_interval
    < 1 validates inside the epoch too), by the Trainer's public settings."""
    if not trainer.enable_validation or (trainer.current_epoch + 1) % (trainer.check_val_every_n_epoch or 1):
        return False
    every = trainer.val_check_batch
    return isinstance(every, int) and every > 0 and (batch_idx + 1) % every == 0
