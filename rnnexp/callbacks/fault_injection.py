"""Kill the process at an exact point of a run, for the resume tests: never used otherwise.

    RNNEXP_FAULT=<hook>@<global_step>[,<hook>@<global_step>...]   e.g. train_batch_end@7

sends SIGKILL to this process (every process of a distributed run, each to itself) the first time
Lightning calls the hook `on_<hook>` with `trainer.global_step` equal to that step. The signal
cannot be caught: nothing runs after it, as when a node dies or a job is killed. Hooks:
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


def parse_faults(text: str) -> list[tuple[str, int]]:
    faults = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        hook, _, step = item.partition("@")
        if hook not in HOOKS or not step.lstrip("-").isdigit():
            raise ValueError(f"{ENV}={text!r}: {item!r} is not <hook>@<step> with hook one of {', '.join(HOOKS)}")
        faults.append((hook, int(step)))
    return faults


class FaultInjection(Checkpoint):
    """SIGKILL at the points RNNEXP_FAULT names (module docstring). Added last and a `Checkpoint`
    subclass only so that Lightning calls it after every other callback, the checkpoint writers
    included: "right after the end-of-epoch checkpoint" is exactly that."""

    def __init__(self, faults: list[tuple[str, int]]):
        self.faults = list(faults)

    @classmethod
    def from_environment(cls) -> FaultInjection | None:
        text = os.environ.get(ENV, "")
        return cls(parse_faults(text)) if text else None

    def _maybe_kill(self, hook: str, trainer) -> None:
        if (hook, trainer.global_step) in self.faults:
            os.kill(os.getpid(), signal.SIGKILL)

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
