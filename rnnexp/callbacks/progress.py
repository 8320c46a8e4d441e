"""What the person watching a run sees: the progress bar and the tutorial's per-step log line."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from rnnexp.callbacks.cadence import StepCadence


class StepPrinter(pl.Callback):
    """Print the tutorial's log line every N optimizer steps:
    `Step 200, Minibatch Loss= 0.5123, Training Accuracy= 0.84400`.

    Reads the batch the module last trained on, so it costs nothing between prints.
    """

    def __init__(self, every_n_steps: int = 0):
        self.every_n_steps = int(every_n_steps)
        self.cadence = StepCadence(self.every_n_steps)

    @property
    def active(self) -> bool:
        return self.every_n_steps > 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.cadence.batch_started(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.cadence.due(trainer):
            return
        step = trainer.global_step
        stats = getattr(pl_module, "last_batch", None)
        if stats is None:
            return
        loss, prediction, target = stats
        line = f"Step {step}, Minibatch Loss= {float(loss):.4f}"
        if pl_module.task.is_classification:
            scored_prediction, scored_target = pl_module._scored(prediction, target)
            accuracy = (scored_prediction.argmax(-1) == scored_target).float().mean()
            line += f", Training Accuracy= {float(accuracy):.5f}"
        # print, not log: this line is for the person watching, like the tutorial's print statement
        pl_module.print(line)


class TrainingProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, showing the latest training loss without a per-step device sync.

    A value logged with `prog_bar=True` on every step is turned into a Python number by Lightning
    after every batch, bar drawn or not (a `.item()`: on a GPU, a wait for the device). This bar
    reads the module's last batch loss only when it redraws, every `refresh_rate` batches.
    """

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        stats = getattr(pl_module, "last_batch", None)
        if stats is not None:
            metrics["train/loss_step"] = float(stats[0])
        return metrics
