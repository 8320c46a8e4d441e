"""From a composed config to the objects of a run: data module, encoder, LightningModule, Trainer.

Every default comes from the config; this module only wires. Values the user can get wrong are
checked first (`validate`), so a bad command line fails before anything is built or written.
"""

from __future__ import annotations

import logging
import math

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import ConfigError, RnnexpError

log = logging.getLogger(__name__)

# keys of a data node that describe the task for configs and tools, not constructor arguments
DATA_META_KEYS = ("name", "metric", "metric_mode")


def _positive_int(cfg: DictConfig, key: str, allow: str = "an integer > 0") -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, value, allow)


def configure_torch(cfg: DictConfig) -> None:
    """The process-wide torch settings a run asks for: intra-op threads (0: leave them as they
    are) and flushing of float32 denormals to zero on the CPU."""
    import torch

    if cfg.threads and int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    torch.set_flush_denormal(bool(cfg.flush_denormal))


def validate(cfg: DictConfig) -> None:
    """Reject values that would fail later with a less helpful message (or not fail at all)."""
    from rnnexp.choices import (
        BACKENDS,
        CELL_NAMES,
        DATASETS,
        ELMAN_NONLINEARITIES,
        HEAD_INITS,
        OPTIMIZERS,
        ORDERS,
        PROFILERS,
        READOUTS,
        SCHEDULERS,
        SOURCES,
    )

    if cfg.cell.name not in CELL_NAMES:
        raise ConfigError("cell.name", cfg.cell.name, CELL_NAMES)
    if cfg.model.backend in BACKENDS and cfg.cell.name in ("rnn", "irnn"):
        allowed = ELMAN_NONLINEARITIES[cfg.model.backend]
        if cfg.cell.nonlinearity not in allowed:
            hint = "sigmoid and identity need model.backend=explicit" if cfg.model.backend == "native" else ""
            raise ConfigError("cell.nonlinearity", cfg.cell.nonlinearity, allowed, hint=hint)
    for key in ("model.hidden_size", "model.num_layers", "data.batch_size"):
        _positive_int(cfg, key)
    if not isinstance(cfg.flush_denormal, bool):
        raise ConfigError("flush_denormal", cfg.flush_denormal, "true, false")
    max_epochs, max_steps = cfg.trainer.max_epochs, cfg.trainer.max_steps
    if max_epochs == 0 or max_epochs < -1 or (max_epochs == -1 and max_steps <= 0):
        raise ConfigError("trainer.max_epochs", max_epochs,
                          "an integer > 0, or -1 with trainer.max_steps > 0")
    if max_steps == 0 or max_steps < -1:
        raise ConfigError("trainer.max_steps", max_steps, "an integer > 0, or -1 for no step limit")
    dropout = cfg.model.dropout
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ConfigError("model.dropout", dropout, "a number in [0, 1)")
    if cfg.model.readout not in READOUTS:
        raise ConfigError("model.readout", cfg.model.readout, READOUTS)
    if cfg.model.backend not in BACKENDS:
        raise ConfigError("model.backend", cfg.model.backend, BACKENDS)
    if cfg.optimizer.name not in OPTIMIZERS:
        raise ConfigError("optimizer.name", cfg.optimizer.name, OPTIMIZERS)
    lr = cfg.optimizer.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError("optimizer.lr", lr, "a number > 0, e.g. optimizer.lr=1e-3")
    if cfg.scheduler.name not in SCHEDULERS:
        raise ConfigError("scheduler.name", cfg.scheduler.name, SCHEDULERS)
    if cfg.model.head_init not in HEAD_INITS:
        raise ConfigError("model.head_init", cfg.model.head_init, HEAD_INITS)
    _positive_int(cfg, "data.eval_batch_size")
    if cfg.data._target_.endswith("SequenceImageDataModule"):
        for key, allowed in (("dataset", DATASETS), ("source", SOURCES), ("order", ORDERS)):
            if cfg.data[key] not in allowed:
                raise ConfigError(f"data.{key}", cfg.data[key], allowed)
    clip = cfg.trainer.gradient_clip_val
    if clip is not None and (not isinstance(clip, (int, float)) or clip < 0):
        raise ConfigError("trainer.gradient_clip_val", clip, "a number >= 0 (0 = no clipping)")
    if cfg.trainer.get("profiler") not in PROFILERS:
        raise ConfigError("trainer.profiler", cfg.trainer.profiler,
                          ", ".join("null" if name is None else name for name in PROFILERS))
    if OmegaConf.select(cfg, "callbacks.divergence_guard.check_every_n_steps") is not None:
        _positive_int(cfg, "callbacks.divergence_guard.check_every_n_steps", "an integer >= 1 (1 = every step)")
    periodic = (cfg.get("callbacks") or {}).get("periodic_checkpoint") or {}
    seconds = periodic.get("every_n_seconds", 0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ConfigError("callbacks.periodic_checkpoint.every_n_seconds", seconds, "a number >= 0 (0 = by steps only)")


def build_datamodule(cfg: DictConfig):
    node = OmegaConf.to_container(cfg.data, resolve=True)
    for key in DATA_META_KEYS:
        node.pop(key, None)
    if isinstance(node.get("system_dirs"), dict):  # per-data-set folders: keep this data set's
        node["system_dirs"] = node["system_dirs"].get(node.get("dataset"), [])
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as exc:
        # Hydra wraps what the constructor raised; a ConfigError is for the user as it is.
        if isinstance(exc.__cause__, RnnexpError):
            raise exc.__cause__ from None
        raise


def build_encoder(cfg: DictConfig, task):
    from rnnexp.nn.recurrent import RecurrentEncoder, cell_spec_from_config

    spec = cell_spec_from_config(cfg.cell)
    encoder = RecurrentEncoder(spec, input_size=task.input_size, hidden_size=int(cfg.model.hidden_size),
                               num_layers=int(cfg.model.num_layers), bidirectional=bool(cfg.model.bidirectional),
                               dropout=float(cfg.model.dropout), backend=str(cfg.model.backend))
    return encoder


def build_bptt(cfg: DictConfig, bidirectional: bool, seq_len: int):
    from rnnexp.bptt import FullBPTT

    if cfg.bptt.name == "full":
        return FullBPTT()
    from rnnexp.bptt.truncated import truncated_from_config  # the truncated-BPTT strategy

    return truncated_from_config(cfg.bptt, bidirectional=bidirectional, seq_len=seq_len)


def build_module(cfg: DictConfig, task):
    from rnnexp.lit.module import SchedulerSpec, SequenceModel

    encoder = build_encoder(cfg, task)
    if cfg.model.compile:
        encoder.core.compile()  # in place: parameter names (and checkpoints) stay the same
    optimizer_node = OmegaConf.to_container(cfg.optimizer, resolve=True)
    optimizer_node.pop("name")
    scheduler = None
    if cfg.scheduler.name != "none":
        node = OmegaConf.to_container(cfg.scheduler, resolve=True)
        node.pop("name")
        interval = node.pop("interval", "epoch")
        monitor = node.pop("monitor", "val/loss")
        scheduler = SchedulerSpec(factory=instantiate(node), interval=interval, monitor=monitor)
    bptt = build_bptt(cfg, encoder.bidirectional, task.seq_len)
    return SequenceModel(
        encoder=encoder, task=task, optimizer_factory=instantiate(optimizer_node), scheduler=scheduler,
        readout=str(cfg.model.readout), head_init=str(cfg.model.head_init),
        report_first_n=int(cfg.evaluation.report_first_n), bptt=bptt,
        gradient_clip_val=float(cfg.trainer.gradient_clip_val or 0.0),
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_callbacks(cfg: DictConfig) -> list:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None or "_target_" not in node:
            continue
        if name == "progress_bar" and not cfg.trainer.enable_progress_bar:
            continue
        callback = instantiate(node)
        # A switched-off callback (`active` False: e.g. every_n_steps=0) is left out: Lightning
        # calls every hook of every callback at every step, whether it does anything or not.
        if getattr(callback, "active", True):
            callbacks.append(callback)
    return callbacks


def build_loggers(cfg: DictConfig, purge_step: int | None = None) -> list:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if not node or "_target_" not in node:
            continue
        extra = {}
        if purge_step is not None and node["_target_"].endswith("TensorBoardLogger"):
            extra["purge_step"] = purge_step  # passed through to SummaryWriter
        loggers.append(instantiate(node, **extra))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list, manual_optimization: bool):
    node = OmegaConf.to_container(cfg.trainer, resolve=True)
    clip = node.pop("gradient_clip_val", 0.0) or 0.0
    # Under manual optimisation (truncated BPTT) Lightning refuses to clip: the module does it.
    if clip and not manual_optimization:
        node["gradient_clip_val"] = clip
    from rnnexp.lit import hook_dispatch
    from rnnexp.lit.nvml import drop_futile_nvml_check

    drop_futile_nvml_check()  # Lightning is imported by now, and with it the per-step NVML probe
    hook_dispatch.install()  # empty hooks are skipped where the profiler is NoProfiler (below)
    extra = {}
    if node.get("profiler") is None:
        from rnnexp.lit.profiler import NoProfiler

        extra["profiler"] = NoProfiler()
    return instantiate(node, callbacks=callbacks, logger=loggers or False, **extra)
