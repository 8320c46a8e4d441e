"""One run, start to finish: validate -> seed -> build -> fit -> test on the best checkpoint -> record.

`train(cfg)` is what `rnnexp-train` calls for each job and what the tests call directly on a
composed config; it returns the run record (the content of metrics.json).

A run directory that already holds a run is continued, never overwritten: a record that says
`completed` (or `diverged`) is returned as it is, and a `checkpoints/last.ckpt` is resumed from.
That is how `resume=<run dir>` and rerunning a sweep into its own directory work.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig

from rnnexp.errors import DivergenceError
from rnnexp.records import FINAL_STATUSES, RunRecord, finite_or_none, read_record, to_float

log = logging.getLogger(__name__)


def _scalar_metrics(metrics: dict) -> dict:
    return {k: finite_or_none(v) for k, v in sorted(metrics.items()) if not k.endswith("_step")}


def _overrides_of(cfg: DictConfig) -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed without Hydra's runtime (the compose API in tests)
        return []


def quiet_library_noise() -> None:
    """Drop messages that say nothing about the run: Lightning's product tip, a deprecation inside
    Lightning's own pytree helper, and its mid-epoch resume warning (ExactResume handles that:
    rnnexp.callbacks.resume)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    # on a machine with SLURM installed, every run outside a job: "The `srun` command is available ... not used"
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in str(record.msg))


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


# Set by global rank 0 before Lightning starts the other processes of a local DDP run (they inherit
# its environment): whether to resume is decided once, on rank 0, not by each process from the
# files it happens to see.
RESUME_DECISION_ENV = "RNNEXP_RESUME_FROM"


def checkpoint_to_resume(run_dir: Path) -> Path | None:
    if not is_global_rank_zero() and RESUME_DECISION_ENV in os.environ:
        decided = os.environ[RESUME_DECISION_ENV]
        return Path(decided) if decided else None
    path = last_checkpoint(run_dir)
    return path if path.is_file() else None


def is_global_rank_zero() -> bool:
    """False only in the extra processes of a distributed run: Lightning's DDP launcher, torchrun
    and SLURM start each of them with its rank in the environment, before anything is built."""
    return all(int(os.environ.get(var, "0")) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


class _UnsavedRecord(RunRecord):
    """Ranks > 0 of a distributed run share rank 0's run directory: one metrics.json, rank 0's."""

    def save(self, status: str | None = None) -> None:
        if status is not None:
            self.data["status"] = status


def train(cfg: DictConfig) -> dict:
    quiet_library_noise()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_record(run_dir)
    if previous and previous.get("status") in FINAL_STATUSES:
        log.warning("%s already %s: nothing to do (its record and checkpoints are left as they are)",
                    run_dir, previous["status"])
        return previous
    resume_from = checkpoint_to_resume(run_dir)
    if is_global_rank_zero():
        os.environ[RESUME_DECISION_ENV] = str(resume_from or "")
    record_type = RunRecord if is_global_rank_zero() else _UnsavedRecord
    # A directory with a record but no checkpoint held a run killed before its first checkpoint:
    # it starts over there, keeping its history (the record's resumes and wall time).
    record = record_type(run_dir, name=str(cfg.name), overrides=_overrides_of(cfg),
                         optimized_metric=str(cfg.optimized_metric), previous=previous)
    built: dict = {}
    try:
        return _train(cfg, run_dir, record, resume_from, built, continued=previous is not None)
    except DivergenceError as exc:
        good = last_checkpoint(run_dir)
        record.update(error=str(exc), diverged_at_step=exc.step,
                      last_good_checkpoint=str(good) if good.is_file() else None)
        record.save("diverged")
        raise
    except BaseException as exc:
        # SystemExit: the process was told to end mid-run, e.g. by submitit's USR2 handler, which
        # requeues a SLURM job before its time limit and exits; the run itself did not fail.
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit)) or any(
            getattr(cb, "interrupted", False) for cb in built.get("callbacks", []))
        record.update(error=f"{type(exc).__name__}: {exc}" if not interrupted else
                      f"interrupted ({type(exc).__name__ if isinstance(exc, SystemExit) else 'Ctrl-C or SIGTERM'}); "
                      "continue with rnnexp-train resume=" + str(run_dir))
        record.save("interrupted" if interrupted else "failed")
        raise


def _train(cfg: DictConfig, run_dir: Path, record: RunRecord, resume_from: Path | None, built: dict,
           continued: bool) -> dict:
    """`continued`: the directory held this run before (resumed from a checkpoint, or started over)."""
    from rnnexp.build import validate

    validate(cfg)  # before torch is even imported: a bad command line fails fast

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from rnnexp.build import (
        build_callbacks,
        build_datamodule,
        build_loggers,
        build_module,
        build_trainer,
        configure_torch,
    )
    from rnnexp.callbacks.resume import ExactResume
    from rnnexp.hparams import flat_hparams, hp_metric_names, sweep_hparams, write_hparams_summary
    from rnnexp.seed_stats import group_name
    from rnnexp.sweep_naming import varying_keys_of_job

    configure_torch(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = build_datamodule(cfg).prepare()
    task = datamodule.task
    if task.main_metric != cfg.data.metric:
        raise ValueError(f"data.metric={cfg.data.metric!r} but the {task.kind} task is scored by "
                         f"{task.main_metric!r}; fix conf/data/{cfg.data.name}.yaml")
    module = build_module(cfg, task)
    logged_batches = 0
    if resume_from is not None:
        from rnnexp.callbacks.resume import logged_batches_of
        from rnnexp.checkpoints import load_checkpoint

        saved = load_checkpoint(resume_from)
        logged_batches = logged_batches_of(saved)
        log.warning("resuming %s from %s (step %d)", run_dir, resume_from, int(saved.get("global_step", 0)))
    elif continued:
        log.warning("%s holds no checkpoint yet: starting its run over", run_dir)
    callbacks = build_callbacks(cfg)
    # purge_step: TensorBoard hides events a killed run logged after its last checkpoint (loggers
    # count batches), so the resumed curves continue without duplicates; all of a run that is
    # started over.
    loggers = build_loggers(cfg, purge_step=logged_batches if continued else None)
    built["callbacks"] = callbacks
    from rnnexp.callbacks.trial_pruning import TrialPruning

    pruning = next((cb for cb in callbacks if isinstance(cb, TrialPruning)), None)  # a search's trial
    if pruning is not None:
        record.update(trial=pruning.record_fields())
    trainer = build_trainer(cfg, callbacks, loggers, manual_optimization=not module.automatic_optimization)

    num_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    runtime = {"data.task": task.kind, "data.seq_len": task.seq_len, "model.num_params": num_params,
               "group": group_name(_overrides_of(cfg)),
               **{k.replace("/", "."): v for k, v in datamodule.describe().items()}}
    # the keys this run's sweep varies come first in TensorBoard's HParams tab
    sweep_keys = varying_keys_of_job()
    hparams, swept = sweep_hparams(flat_hparams(cfg, runtime), sweep_keys, _overrides_of(cfg))
    if not continued:  # the first segment already declared them
        for logger in loggers:
            if isinstance(logger, pl.loggers.TensorBoardLogger) and is_global_rank_zero():  # others log nothing
                write_hparams_summary(logger.experiment, hparams, hp_metric_names(task.main_metric), swept)
    # sweep_keys: `rnnexp-train resume=<job dir>` hands them back to the job (rnnexp.train)
    record.update(hparams=hparams, sweep_keys=sweep_keys, num_params=num_params,
                  split_sizes=dict(zip(("train", "val", "test"), datamodule.split_sizes)))
    record.save("running")

    clock = next((cb for cb in callbacks if isinstance(cb, ExactResume)), None)
    if clock is not None:
        clock.wall_started = record.started
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True)
    # A run resumed after its last epoch trains no more: its fit metrics come from the checkpoint.
    fit_metrics = {**(clock.fit_metrics if clock else {}), **trainer.callback_metrics}
    if clock is not None and clock.resumed:
        record.earlier_wall_time = clock.earlier_wall_s  # up to the checkpoint resumed from
    # Read now: testing the best checkpoint below loads that checkpoint's callback states.
    fit_facts = {"optimizer_steps_per_epoch": list(clock.steps_per_epoch) if clock else [],
                 "fit_time_s": round(clock.fit_seconds(), 3) if clock else None}

    checkpoint = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    # Test the best checkpoint by the monitored metric; without one, the final weights.
    test_results = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None,
                                verbose=False, weights_only=True)
    metrics = {**fit_metrics, **(test_results[0] if test_results else {})}
    metrics = _scalar_metrics(metrics)
    optimized = metrics.get(str(cfg.optimized_metric))
    record.update(
        metrics=metrics,
        optimized_value=optimized,
        best={"monitor": checkpoint.monitor if checkpoint else "none",
              "score": finite_or_none(checkpoint.best_model_score) if checkpoint and
              checkpoint.best_model_score is not None else None,
              "checkpoint": best_path},
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        **fit_facts,
    )
    if pruning is not None:  # stopped early by the search's pruner: a finished run, marked so
        record.update(trial=pruning.record_fields())
    record.save("pruned" if pruning is not None and pruning.pruned_at_step is not None else "completed")
    if is_global_rank_zero():
        _announce(record.data, task.main_metric)
    return record.data


def _announce(record: dict, metric: str) -> None:
    from rich.console import Console

    console = Console(stderr=False, highlight=False, soft_wrap=True)
    value = record["metrics"].get(f"test/{metric}")
    shown = "n/a" if value is None else (f"{value:.4f}" if metric == "acc" else f"{value:.3e}")
    console.print(f"[bold]test/{metric}[/bold] = {shown}   ({record['name']}, {record['global_step']} steps, "
                  f"{record['fit_time_s']:.1f} s)")
    for key in [k for k in record["metrics"] if k.startswith("test/acc_first")]:
        console.print(f"[bold]{key}[/bold] = {record['metrics'][key]:.4f}")
    console.print(f"run directory: {record['run_dir']}")
    console.print(f"tensorboard:   tensorboard --logdir {record['run_dir']}")


def optimized_value(record: dict) -> float | None:
    """The sweeper's objective; None when the run has no finite value (Optuna: a failed trial)."""
    value = record.get("optimized_value")
    return None if value is None or not math.isfinite(to_float(value)) else float(value)
