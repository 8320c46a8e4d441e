"""One run, start to finish: validate -> seed -> build -> fit -> test on the best checkpoint -> record.

`train(cfg)` is what `rnnexp-train` calls for each job and what the tests call directly on a
composed config; it returns the run record (the content of metrics.json).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig

from rnnexp.records import RunRecord, finite_or_none, to_float

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
    """Drop two messages that say nothing about the run: Lightning's product tip and a
    deprecation inside Lightning's own pytree helper."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in str(record.msg))


def train(cfg: DictConfig) -> dict:
    quiet_library_noise()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(run_dir, name=str(cfg.name), overrides=_overrides_of(cfg),
                       optimized_metric=str(cfg.optimized_metric))
    try:
        return _train(cfg, run_dir, record)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        record.update(error=f"{type(exc).__name__}: {exc}")
        record.save(status)
        raise


def _train(cfg: DictConfig, run_dir: Path, record: RunRecord) -> dict:
    from rnnexp.build import validate

    validate(cfg)  # before torch is even imported: a bad command line fails fast

    import pytorch_lightning as pl
    import torch

    from rnnexp.build import build_callbacks, build_datamodule, build_loggers, build_module, build_trainer
    from rnnexp.hparams import flat_hparams, hp_metric_names, write_hparams_summary

    if cfg.threads and int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = build_datamodule(cfg).prepare()
    task = datamodule.task
    if task.main_metric != cfg.data.metric:
        raise ValueError(f"data.metric={cfg.data.metric!r} but the {task.kind} task is scored by "
                         f"{task.main_metric!r}; fix conf/data/{cfg.data.name}.yaml")
    module = build_module(cfg, task)
    callbacks, loggers = build_callbacks(cfg), build_loggers(cfg)
    trainer = build_trainer(cfg, callbacks, loggers, manual_optimization=not module.automatic_optimization)

    num_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    runtime = {"data.task": task.kind, "data.seq_len": task.seq_len, "model.num_params": num_params,
               **{k.replace("/", "."): v for k, v in datamodule.describe().items()}}
    hparams = flat_hparams(cfg, runtime)
    for logger in loggers:
        if isinstance(logger, pl.loggers.TensorBoardLogger):
            write_hparams_summary(logger.experiment, hparams, hp_metric_names(task.main_metric))
    record.update(hparams=hparams, num_params=num_params,
                  split_sizes=dict(zip(("train", "val", "test"), datamodule.split_sizes)))
    record.save("running")

    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.time() - fit_started
    fit_metrics = dict(trainer.callback_metrics)
    if trainer.interrupted:
        record.update(metrics=_scalar_metrics(fit_metrics), epochs=trainer.current_epoch,
                      global_step=trainer.global_step)
        record.save("interrupted")
        return record.data

    checkpoint = trainer.checkpoint_callback
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
        fit_time_s=round(fit_seconds, 3),
    )
    record.save("completed")
    _announce(cfg, record.data, task.main_metric)
    return record.data


def _announce(cfg: DictConfig, record: dict, metric: str) -> None:
    from rich.console import Console

    console = Console(stderr=False, highlight=False, soft_wrap=True)
    value = record["metrics"].get(f"test/{metric}")
    shown = "n/a" if value is None else (f"{value:.4f}" if metric == "acc" else f"{value:.3e}")
    console.print(f"[bold]test/{metric}[/bold] = {shown}   ({record['name']}, {record['global_step']} steps, "
                  f"{record['fit_time_s']:.1f} s)")
    first = [k for k in record["metrics"] if k.startswith("test/acc_first")]
    for key in first:
        console.print(f"[bold]{key}[/bold] = {record['metrics'][key]:.4f}")
    console.print(f"run directory: {record['run_dir']}")
    console.print(f"tensorboard:   tensorboard --logdir {record['run_dir']}")


def optimized_value(record: dict) -> float:
    value = record.get("optimized_value")
    return float("nan") if value is None or not math.isfinite(to_float(value)) else float(value)
