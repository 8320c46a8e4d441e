"""Kill the process at an exact point of a run, for the resume tests: never used otherwise.

    RNNEXP_FAULT=<hook>@<global_step>[#<rank>][!INT][,...]   e.g. train_batch_end@7, train_batch_end@7#1

sends SIGKILL to this process (every process of a distributed run, each to itself; with #<rank>
only the process of that global rank) when Lightning calls the hook `on_<hook>` with
`trainer.global_step` equal to that step. SIGKILL cannot be caught: nothing runs after it, as
when a node dies or a job is killed. `!INT` sends SIGINT instead: Ctrl-C at an exact point (twice
at the same point: Ctrl-C pressed twice). Hooks:
    fit_start        before anything is trained or written
    train_start      right after the initial last.ckpt
    train_batch_end  after a batch and the last.ckpt it may have written (mid-epoch)
    train_epoch_end  right after the end-of-epoch last.ckpt
    validation_batch_end, test_batch_end   during validation, during the test stage
    save_checkpoint  while a checkpoint is being assembled, before its file is written
Read from the environment, not the config: a resumed run replays its recorded config, and must
not be killed at the same point again unless the environment says so.
"""

from __future__ import annotations

import os
import signal

from pytorch_lightning.callbacks import Checkpoint

ENV = "RNNEXP_FAULT"
HOOKS = ("fit_start", "train_start", "train_batch_end", "train_epoch_end", "validation_batch_end",
         "test_batch_end", "save_checkpoint")


SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}


def parse_faults(text: str) -> list[tuple[str, int, int | None, signal.Signals]]:
    """(hook, global_step, rank or None for every rank, signal) for each item of RNNEXP_FAULT."""
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        hook, _, rest = item.partition("@")
        rest, _, name = rest.partition("!")
        step, _, rank = rest.partition("#")
        if hook not in HOOKS or not step.isdigit() or (rank and not rank.isdigit()) or \
                (name and name not in SIGNALS):
            raise ValueError(f"{ENV}={text!r}: {item!r} is not <hook>@<step>[#<rank>][!INT] with hook one of "
                             f"{', '.join(HOOKS)}")
        faults.append((hook, int(step), int(rank) if rank else None, SIGNALS[name or "KILL"]))
    return faults


class FaultInjection(Checkpoint):
    """SIGKILL at the points RNNEXP_FAULT names (module docstring). Added last and a `Checkpoint`
    subclass only so that Lightning calls it after every other callback, the checkpoint writers
    included: "right after the end-of-epoch checkpoint" is exactly that."""

    def __init__(self, faults: list[tuple[str, int, int | None, signal.Signals]]):
        self.faults = list(faults)

    @classmethod
    def from_environment(cls) -> FaultInjection | None:
        text = os.environ.get(ENV, "")
        return cls(parse_faults(text)) if text else None

    def _maybe_kill(self, hook: str, trainer) -> None:
        for fault_hook, step, rank, signum in self.faults:
            if (fault_hook, step) == (hook, trainer.global_step) and rank in (None, trainer.global_rank):
                os.kill(os.getpid(), signum)

    def on_fit_start(self, trainer, pl_module):
        self._maybe_kill("fit_start", trainer)

    def on_train_start(self, trainer, pl_module):
        self._maybe_kill("train_start", trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe_kill("train_batch_end", trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._maybe_kill("train_epoch_end", trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._maybe_kill("validation_batch_end", trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._maybe_kill("test_batch_end", trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._maybe_kill("save_checkpoint", trainer)
