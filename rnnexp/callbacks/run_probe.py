"""When a run reached its milestones, for `rnnexp-bench` (startup, sweep), added from the command line:

    rnnexp-train ... +callbacks.bench_probe._target_=rnnexp.callbacks.run_probe.RunProbe \\
                     [+callbacks.bench_probe.path=/tmp/probe.json]   (default: <run dir>/bench_probe.json)

It writes wall-clock timestamps (`time.time()`, comparable across processes on one machine): when
it was built (after the imports, data decoding and model, before the Trainer), when the first
training batch started and ended and when training ended, with the process id, torch's thread
count and the step count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class RunProbe(pl.Callback):
    def __init__(self, path: str = ""):
        self.path = Path(path) if path else None
        # built with the run's other callbacks: after Python, Hydra, the torch and Lightning imports,
        # the data decoding and the model, before the Trainer
        self.facts: dict = {"pid": os.getpid(), "threads": torch.get_num_threads(), "created": time.time()}

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.facts))

    def on_train_start(self, trainer, pl_module):
        self.facts["train_start"] = time.time()
        if self.path is None:  # the run directory, where the TensorBoard logger writes
            self.path = Path(trainer.log_dir or ".") / "bench_probe.json"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.facts.setdefault("first_step_start", time.time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if "first_step_end" not in self.facts:
            self.facts["first_step_end"] = time.time()
            self._write()  # already useful if the run is stopped here

    def on_train_end(self, trainer, pl_module):
        self.facts["train_end"] = time.time()
        self.facts["global_step"] = trainer.global_step
        self._write()
