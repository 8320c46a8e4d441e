"""The LightningModule that wraps any encoder: head and loss chosen by the task kind, metrics,
optimizer and scheduler from config, and a swappable BPTT strategy for the training step."""

from __future__ import annotations

import gc
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from rnnexp.bptt import FullBPTT
from rnnexp.data.task import TaskSpec
from rnnexp.nn.recurrent import RecurrentEncoder, readout

# steps whose scored predictions go to the training metric in one update
TRAIN_METRIC_EVERY = 32

# Attributes set on every step that are never parameters, buffers or modules (Lightning sets
# `_current_fx_name` around each of the ~40 hooks it calls per step).
_PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "last_batch", "_pending_scores"})


@dataclass
class SchedulerSpec:
    """A partially-applied torch scheduler and how Lightning should step it."""

    factory: Callable
    interval: str = "epoch"  # "epoch" | "step"
    monitor: str = "val/loss"  # only ReduceLROnPlateau reads it


class SequenceModel(pl.LightningModule):
    def __init__(self, encoder: RecurrentEncoder, task: TaskSpec, optimizer_factory: Callable,
                 scheduler: SchedulerSpec | None = None, readout: str = "final_state",
                 head_init: str = "default", report_first_n: int = 0, bptt=None,
                 gradient_clip_val: float = 0.0, run_config: dict | None = None):
        super().__init__()
        # The full resolved config rides in every checkpoint (plain types only, so it loads with
        # weights_only=True) and lets `rnnexp-eval` rebuild the same architecture.
        self.save_hyperparameters({"run_config": run_config or {}}, logger=False)
        self.encoder = encoder
        self.task = task
        self.readout_kind = readout
        self.head = nn.Linear(encoder.output_size, task.output_size)
        if head_init == "normal":
            # tf.random_normal in the seed's examples: weights and biases ~ N(0, 1).
            nn.init.normal_(self.head.weight)
            nn.init.normal_(self.head.bias)
        self.optimizer_factory = optimizer_factory
        self.scheduler_spec = scheduler
        self.report_first_n = int(report_first_n)
        self.bptt = bptt or FullBPTT()
        self.automatic_optimization = self.bptt.automatic_optimization
        self.gradient_clip_val = float(gradient_clip_val)  # used by manual-optimisation strategies

        metric = task.main_metric
        if task.is_classification:
            def make(validate_args=True):
                return torchmetrics.classification.MulticlassAccuracy(task.output_size, average="micro",
                                                                      validate_args=validate_args)
            self.best_val = torchmetrics.MaxMetric()
        else:
            def make(validate_args=True):
                return torchmetrics.MeanSquaredError()
            self.best_val = torchmetrics.MinMetric()
        # The training metric is updated every step with the head's own output, whose shape and range
        # are right by construction: its input checks (a torch.unique per call) would only cost time.
        self.train_metric, self.val_metric, self.test_metric = make(validate_args=False), make(), make()
        # Saved in checkpoints, so a resumed run's "best so far" and epoch metrics carry on.
        self.best_val.persistent(True)
        self.train_metric.persistent(True)
        self.metric_name = metric
        self.register_buffer("_first_n_correct", torch.zeros((), dtype=torch.long), persistent=False)
        # The epoch's training loss, summed over samples: a running tensor sum costs nothing per step,
        # where a `self.log(..., on_epoch=True)` walks Lightning's result collection every step. Not in
        # checkpoints, like Lightning's own epoch accumulators: a resumed epoch averages what it trained.
        # Inf or nan once any loss of the epoch was: DivergenceGuard tests this one number.
        self.register_buffer("running_loss_sum", torch.zeros(()), persistent=False)
        self._train_loss_count = 0  # samples in running_loss_sum: known on the host, no tensor needed
        self._pending_scores: list[tuple[torch.Tensor, torch.Tensor]] = []  # (scores, target) not yet in train_metric
        self._test_seen = 0

    def __setattr__(self, name: str, value) -> None:
        # nn.Module.__setattr__ first tests the value against Parameter, Buffer and Module (Python-level
        # isinstance checks, a few microseconds each): for these names, set straight into __dict__, as
        # nn.Module itself finally does for them.
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- model ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None):
        """prediction [B, C] (or [B, T, C] for per-step tasks, [B] for regression), final state."""
        outputs, state = self.encoder(x, state)
        return self.decode(outputs, state), state

    def decode(self, outputs: torch.Tensor, state):
        """The prediction from the encoder's outputs and final state (rnnexp.gradient_flow feeds
        it an encoder unrolled step by step)."""
        if self.task.kind == "classify_each":
            return self.head(outputs)
        if self.task.kind == "regress_each":
            return self.head(outputs).squeeze(-1)
        features = readout(outputs, state, self.readout_kind, self.encoder.num_layers, self.encoder.bidirectional)
        prediction = self.head(features)
        if self.task.kind == "regress_last":
            prediction = prediction.squeeze(-1)
        return prediction

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task.kind in ("regress_last", "regress_each"):
            return F.mse_loss(prediction, target)
        if self.task.kind == "classify_each":
            return F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1))
        return F.cross_entropy(prediction, target)

    def _scored(self, prediction: torch.Tensor, target: torch.Tensor):
        """The (prediction, target) pairs the main metric scores."""
        if self.task.kind == "classify_each":
            n = self.task.scored_last_steps or target.shape[1]
            prediction, target = prediction[:, -n:], target[:, -n:]
            return prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1)
        if self.task.kind == "regress_each":
            n = self.task.scored_last_steps or target.shape[1]
            return prediction[:, -n:].reshape(-1), target[:, -n:].reshape(-1)
        return prediction, target

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        return self.bptt.training_step(self, batch, batch_idx)

    # Lightning reads training_step's signature on every step (inspect.getfullargspec, to decide
    # whether to pass batch_idx): tens of microseconds each time. A signature stored on the
    # function is what inspect returns first, so it is worked out once, here.
    training_step.__signature__ = inspect.signature(training_step)

    def on_train_start(self):
        # What is alive now (the modules of torch, Lightning and Hydra, the data, this Trainer: some
        # 500k objects) lives as long as the run. Frozen out of the cyclic garbage collector's sight,
        # the full collections that the training loop's many small allocations trigger now and then
        # cost milliseconds instead of a quarter of a second each on a 2-core machine.
        gc.freeze()

    def on_train_end(self):
        gc.unfreeze()  # back in the collector's care: a process that trains again can free them

    def on_train_epoch_end(self):
        # Under manual optimisation Lightning steps no LR scheduler: the BPTT strategy does.
        hook = getattr(self.bptt, "on_train_epoch_end", None)
        if hook is not None:
            hook(self)
        # The epoch's values, under the names `self.log(on_step=True, on_epoch=True)` would give them:
        # train/loss_epoch for the loggers, train/loss for callbacks and the run record.
        if self._train_loss_count > 0:
            mean = self.running_loss_sum / self._train_loss_count
            self.log("train/loss_epoch", mean, prog_bar=True)
            self.log("train/loss", mean, logger=False)
        self.running_loss_sum.zero_()
        self._train_loss_count = 0
        # Lightning computes the metric object now, then resets it for the next epoch.
        self._update_train_metric()
        self.log(f"train/{self.metric_name}", self.train_metric, on_step=False, on_epoch=True)

    def log_train_step(self, loss: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Record one batch's training loss and metric. Runs every step, so it keeps off the two costs
        of a training loop's bookkeeping: no `.item()` (on a GPU, a wait for the device every step),
        and no `self.log` on the steps whose values no logger writes (each call walks Lightning's
        result collection: more than the loss computation of a small model)."""
        # One tensor op per step: each small op after the backward pass runs with cold caches (tens
        # of microseconds, not the few it takes in a loop), so the bookkeeping is kept to one.
        loss, prediction = loss.detach(), prediction.detach()
        self.last_batch = (loss, prediction, target)  # for StepPrinter, DivergenceGuard, the progress bar
        self.running_loss_sum.add_(loss, alpha=target.shape[0])
        self._train_loss_count += target.shape[0]
        # The metric is updated in one call per TRAIN_METRIC_EVERY steps (a torchmetrics update costs
        # as much as ten small tensor ops): same result, its argmax and concatenation batched too.
        self._pending_scores.append(self._scored(prediction, target))
        if len(self._pending_scores) >= TRAIN_METRIC_EVERY:
            self._update_train_metric()
        if self._loggers_write_this_step():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, batch_size=target.shape[0])

    def _update_train_metric(self) -> None:
        if self._pending_scores:
            predictions, targets = zip(*self._pending_scores)
            self._pending_scores = []
            predicted = torch.cat(predictions)
            if self.task.is_classification:
                predicted = predicted.argmax(-1)  # the class, as the metric would take it from the scores
            self.train_metric.update(predicted, torch.cat(targets))

    def state_dict(self, *args, **kwargs):
        # A checkpoint holds the training metric's state: bring it up to date with the last steps first.
        self._update_train_metric()
        return super().state_dict(*args, **kwargs)

    def _loggers_write_this_step(self) -> bool:
        """True on the batches after which Lightning writes step metrics to the loggers (every
        trainer.log_every_n_steps batches, and the last one): Lightning's own test, which its
        LearningRateMonitor reads the same way."""
        trainer = self._trainer
        if trainer is None or not self.loggers:
            return False
        return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)

    # -- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str, metric: torchmetrics.Metric):
        x, y = batch
        prediction, _ = self(x)
        loss = self.loss(prediction, y)
        metric.update(*self._scored(prediction, y))
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(x))
        self.log(f"{stage}/{self.metric_name}", metric, on_epoch=True, prog_bar=stage == "val")
        if math.isfinite(self.task.baseline):
            self.log(f"{stage}/{self.metric_name}_baseline", self.task.baseline, on_epoch=True)
        if math.isfinite(self.task.loss_baseline):
            self.log(f"{stage}/loss_baseline", self.task.loss_baseline, on_epoch=True)
        return prediction

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", self.val_metric)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:  # a partial pass over val must not count as "best"
            return
        self.best_val.update(self.val_metric.compute())
        self.log(f"hp/val_{self.metric_name}_best", self.best_val.compute())

    def on_test_epoch_start(self):
        self._first_n_correct.zero_()
        self._test_seen = 0

    def test_step(self, batch, batch_idx):
        prediction = self._evaluate(batch, "test", self.test_metric)
        if self.report_first_n and self._test_seen < self.report_first_n:
            # The seed's TensorFlow examples report accuracy on the first 128 test images only.
            take = self.report_first_n - self._test_seen
            correct = prediction[:take].argmax(-1) == batch[1][:take]
            self._first_n_correct += correct.sum()
        self._test_seen += len(batch[0])
        return prediction  # read by rnnexp.figures.TestFigures (confusion matrix / scatter)

    def on_test_epoch_end(self):
        self.log(f"hp/test_{self.metric_name}", self.test_metric.compute())
        if self.report_first_n:
            seen = min(self._test_seen, self.report_first_n)
            self.log(f"test/acc_first{self.report_first_n}", self._first_n_correct.float() / max(seen, 1))

    # -- optimisation ---------------------------------------------------------------------------
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # Lightning calls this after every backward pass with trainer.gradient_clip_val, and its
        # default parses and checks the algorithm's name before finding there is nothing to clip:
        # ~50 us a step here. Without a clip value there is nothing to do.
        if gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_spec is None:
            return optimizer
        scheduler = self.scheduler_spec.factory(optimizer=optimizer)
        config = {"scheduler": scheduler, "interval": self.scheduler_spec.interval}
        if self.automatic_optimization:  # under manual optimisation the BPTT strategy reads the monitor
            config["monitor"] = self.scheduler_spec.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
