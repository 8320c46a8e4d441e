"""The LightningModule that wraps any encoder: head and loss chosen by the task kind, metrics,
optimizer and scheduler from config, and a swappable BPTT strategy for the training step."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from rnnexp.bptt import FullBPTT
from rnnexp.data.task import TaskSpec
from rnnexp.nn.recurrent import RecurrentEncoder, readout


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
            # tf.random_normal in the tutorial's examples: weights and biases ~ N(0, 1).
            nn.init.normal_(self.head.weight)
            nn.init.normal_(self.head.bias)
        self.optimizer_factory = optimizer_factory
        self.scheduler_spec = scheduler
        self.report_first_n = int(report_first_n)
        self.bptt = bptt or FullBPTT()
        self.automatic_optimization = self.bptt.automatic_optimization
        # trainer.gradient_clip_val: Lightning clips under automatic optimisation (its default
        # configure_gradient_clipping), this module's on_before_optimizer_step under manual
        # optimisation (the truncated strategies).
        self.gradient_clip_val = float(gradient_clip_val)

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
        # where a `self.log(..., on_epoch=True)` walks Lightning's result collection every step.
        # Not torchmetrics.MeanMetric: it keeps a nan only with nan_strategy="disable", which then
        # drops the weights (the short last batch would count as much as a full one), and its other
        # strategies test for nan with a host sync every step (tests/test_hot_path.py pins both). Not in
        # the state_dict but in resumable checkpoints (on_save_checkpoint): an epoch resumed midway
        # averages all its batches.
        # Inf or nan once any loss of the epoch was: DivergenceGuard tests this one number.
        self.register_buffer("running_loss_sum", torch.zeros(()), persistent=False)
        self._train_loss_count = 0  # samples in running_loss_sum: known on the host, no tensor needed
        self._test_seen = 0

    # -- model ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None):
        """prediction [B, C] (or [B, T, C] for per-step tasks, [B] for regression), final state."""
        outputs, state = self.encoder(x, state)
        return self.decode(outputs, state), state

    def decode(self, outputs: torch.Tensor, state):
        """The prediction from the encoder's outputs and final state (rnnexp.callbacks.gradient_flow feeds
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

    def on_train_start(self):
        # What is alive now (the modules of torch, Lightning and Hydra, the data, this Trainer: some
        # 500k objects) lives as long as the run. Frozen out of the cyclic garbage collector's sight,
        # the full collections that the training loop's many small allocations trigger now and then
        # cost milliseconds instead of a quarter of a second each on a 2-core machine.
        gc.freeze()

    def on_train_end(self):
        gc.unfreeze()  # back in the collector's care: a process that trains again can free them

    def on_train_epoch_end(self):
        # After the epoch's validation (ReduceLROnPlateau sees its val metric) and before the
        # epoch-end last.ckpt is written (a Checkpoint callback's hook runs after this one).
        self.step_schedulers("epoch", self.trainer.current_epoch + 1)
        # The epoch's values, under the names `self.log(on_step=True, on_epoch=True)` would give them:
        # train/loss_epoch and train/<metric> for the loggers, train/loss for callbacks and the record.
        # Written to the loggers here, not by Lightning after the epoch-end hooks: the epoch-end
        # last.ckpt is written between the two, and a run killed right after it must find them in
        # its curves. The metric is reset here for the same reason: the next epoch starts empty.
        epoch_values = {}
        if self._train_loss_count > 0:
            mean = self.running_loss_sum / self._train_loss_count
            epoch_values["train/loss_epoch"] = mean
            self.log("train/loss_epoch", mean, prog_bar=True, logger=False)
            self.log("train/loss", mean, logger=False)
        self.running_loss_sum.zero_()
        self._train_loss_count = 0
        epoch_values[f"train/{self.metric_name}"] = self.train_metric.compute()
        self.log(f"train/{self.metric_name}", epoch_values[f"train/{self.metric_name}"], logger=False)
        self.train_metric.reset()
        self._write_to_loggers(epoch_values)

    def _write_to_loggers(self, values: dict[str, torch.Tensor]) -> None:
        """Write training values to the loggers now, at the step Lightning would give them (the
        index of the batch, over the whole run). Now, not through `self.log`, which Lightning
        writes after the batch-end and epoch-end callbacks: last.ckpt is written in those (after
        flushing the loggers), and a run killed right after it must find these values in its
        curves, since the resumed run does not train that batch again."""
        if not self.loggers:
            return
        metrics = {name: float(value) for name, value in values.items()}
        metrics["epoch"] = self.trainer.current_epoch  # as Lightning adds to what it logs
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.trainer.fit_loop.total_batch_idx)

    def log_train_step(self, loss: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Record one batch's training loss and metric. Runs every step, so it keeps off the two costs
        of a training loop's bookkeeping: no `.item()` (on a GPU, a wait for the device every step),
        and no `self.log` on the steps whose values no logger writes (each call walks Lightning's
        result collection: more than the loss computation of a small model)."""
        loss, prediction = loss.detach(), prediction.detach()
        self.last_batch = (loss, prediction, target)  # for StepPrinter, DivergenceGuard, the progress bar
        self.running_loss_sum.add_(loss, alpha=target.shape[0])
        self._train_loss_count += target.shape[0]
        self.train_metric.update(*self._scored(prediction, target))
        if self._loggers_write_this_step():
            self._write_to_loggers({"train/loss_step": loss})

    # -- the epoch's accumulators in checkpoints ------------------------------------------------
    # The running loss sum and the training metric's state are each process's own: under DDP
    # every process keeps its share of the epoch. A checkpoint is written by rank 0 alone, so each
    # process's values are gathered into it, and each process takes back its own on resume.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        own = {"running_loss_sum": self.running_loss_sum.detach().clone(),
               "running_loss_count": torch.tensor(self._train_loss_count, device=self.running_loss_sum.device)}
        own.update({key: value for key, value in checkpoint["state_dict"].items()
                    if key.startswith("train_metric.")})
        world = self.trainer.world_size
        checkpoint["epoch_accumulators"] = {
            "world_size": world,
            # [world_size, ...]: every process calls this hook while the checkpoint is assembled
            "per_process": {key: (self.all_gather(value) if world > 1 else value.unsqueeze(0)).cpu()
                            for key, value in own.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning calls this before it loads checkpoint["state_dict"] into the module.
        saved = checkpoint.get("epoch_accumulators")
        if not saved or saved.get("world_size") != self.trainer.world_size:
            return  # another number of processes: each starts from rank 0's state_dict
        mine = {key: value[self.trainer.global_rank] for key, value in saved["per_process"].items()}
        self.running_loss_sum.copy_(mine.pop("running_loss_sum"))
        self._train_loss_count = int(mine.pop("running_loss_count"))
        checkpoint["state_dict"].update(mine)

    def _loggers_write_this_step(self) -> bool:
        """True every trainer.log_every_n_steps batches, as Lightning writes step metrics."""
        if not self.loggers:  # also when no Trainer is attached
            return False
        trainer = self.trainer
        return (trainer.fit_loop.total_batch_idx + 1) % trainer.log_every_n_steps == 0

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
            # The tutorial's TensorFlow examples report accuracy on the first 128 test images only.
            take = self.report_first_n - self._test_seen
            correct = prediction[:take].argmax(-1) == batch[1][:take]
            self._first_n_correct += correct.sum()
        self._test_seen += len(batch[0])
        return prediction  # read by rnnexp.callbacks.test_figures.TestFigures (confusion matrix / scatter)

    def on_test_epoch_end(self):
        self.log(f"hp/test_{self.metric_name}", self.test_metric.compute())
        if self.report_first_n:
            seen = min(self._test_seen, self.report_first_n)
            self.log(f"test/acc_first{self.report_first_n}", self._first_n_correct.float() / max(seen, 1))

    # -- optimisation ---------------------------------------------------------------------------
    # Gradients are clipped in one place of Lightning's optimizer step for every BPTT strategy: after
    # the backward pass and, under mixed precision (trainer.precision=16-mixed), after the loss scale
    # is divided out of them, so the clip acts on the true gradient (before it, on one ~65536x too
    # large). The precision plugin's optimizer_step runs the closure, unscales, calls the
    # on_before_optimizer_step hooks (callbacks', then this module's), then - under automatic
    # optimisation only - configure_gradient_clipping (Lightning's default: clips with
    # trainer.gradient_clip_val when one is set), and steps the optimizer.
    def on_before_optimizer_step(self, optimizer):
        # Manual optimisation (bptt=truncated|lookback): Lightning clips nothing, so clip here,
        # once per optimizer.step() of the strategy. Automatic (bptt=full): Lightning clips next, in
        # configure_gradient_clipping, with trainer.gradient_clip_val: not here, or it would clip twice.
        if not self.automatic_optimization and self.gradient_clip_val > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")

    # -- learning-rate schedulers ---------------------------------------------------------------
    def step_schedulers(self, interval: str, count: int) -> None:
        """Step the schedulers of `interval` ("step" or "epoch") whose frequency divides `count`.

        The module steps them itself under both optimisation modes: right after each optimizer step
        and in its epoch-end hook. Lightning would step them after the batch-end and epoch-end
        callbacks, so last.ckpt, written in those, would hold a scheduler one step behind and a run
        resumed from it would lag; under manual optimisation it steps none at all."""
        trainer = self.trainer
        for config in trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency != 0:
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                metric = trainer.callback_metrics.get(self.scheduler_spec.monitor)
                if metric is None:  # no validation yet (e.g. limit_val_batches=0): nothing to judge
                    continue
                config.scheduler.step(metric)
            else:
                config.scheduler.step()

    def lr_scheduler_step(self, scheduler, metric):
        """Lightning's own scheduler stepping does nothing here: `step_schedulers` does it."""

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)  # automatic optimisation only; global_step counts it next
        if self.scheduler_spec is not None:
            self.step_schedulers("step", self.trainer.global_step + 1)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_spec is None:
            return optimizer
        scheduler = self.scheduler_spec.factory(optimizer=optimizer)
        config = {"scheduler": scheduler, "interval": self.scheduler_spec.interval}
        if self.automatic_optimization:  # under manual optimisation the BPTT strategy reads the monitor
            config["monitor"] = self.scheduler_spec.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}
