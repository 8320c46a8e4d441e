"""Report a search trial's validation metric to its Optuna study, and stop when the pruner says so.

Active only in a search: `hparams_search=optuna` adds it (conf/hparams_search/optuna.yaml) and the
sweeper gives each job `trial.storage`, `trial.study_name` and `trial.number`, so the job reaches
its trial from whatever process or node the launcher ran it in. At every validation (not the
sanity check) global rank 0 reports `val/<metric>` at the optimizer step and asks the pruner
(`hydra.sweeper.pruner`); the answer is broadcast, so every rank of a distributed run stops at
the same step. A pruned run ends like a finished one, only sooner: training stops after this
validation, last.ckpt and the best checkpoint are written as at any end, the test runs on the
best checkpoint, and the record says `pruned` with `trial.pruned_at_step` (rnnexp.training).
TensorBoard shows it as the scalar `trial/pruned_at_step` and a line in the Text tab.
"""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class TrialPruning(pl.Callback):
    def __init__(self, storage: str | None, study_name: str | None, trial_number: int | None, monitor: str,
                 pruner: str = "none", pruning: dict | None = None):
        self.storage, self.study_name, self.trial_number = storage, study_name, trial_number
        self.monitor, self.pruner_name, self.pruning = monitor, pruner, dict(pruning or {})
        # outside a sweep (hparams_search=optuna in a single run) there is no trial to report to
        self.active = trial_number is not None and storage is not None and study_name is not None
        self.trial = None
        self.pruned_at_step: int | None = None

    def record_fields(self) -> dict:
        """The run record's `trial` (its `state` is added from the run's status: rnnexp.records)."""
        fields = {"number": int(self.trial_number), "study": str(self.study_name)}
        if self.pruned_at_step is not None:
            fields["pruned_at_step"] = self.pruned_at_step
        return fields

    def setup(self, trainer, pl_module, stage):
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        from rnnexp.optuna_study import open_trial, pruner_of

        self.trial, why = open_trial(self.storage, self.study_name, int(self.trial_number),
                                     pruner_of(self.pruner_name, self.pruning))
        if self.trial is None:
            log.warning("%s: this run reports nothing to it", why)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            value = None if value is None else float(value)
            if value is not None and math.isfinite(value):
                self.trial.report(value, step=trainer.global_step)
                prune = self.trial.should_prune()
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        step = trainer.global_step
        self.pruned_at_step = step
        trainer.should_stop = True
        message = (f"pruned at step {step}: the {self.pruner_name} pruner stopped trial {self.trial_number} of "
                   f"study {self.study_name!r}, unpromising against the other trials at this step")
        log.warning("%s", message)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, pl.loggers.TensorBoardLogger):
                    logger.experiment.add_scalar("trial/pruned_at_step", step, global_step=step)
                    logger.experiment.add_text("trial", message, global_step=step)
