"""From a composed config to the objects of a run: data module, encoder, LightningModule, Trainer.

Every default comes from the config; this module only wires. Values the user can get wrong are
checked first (`validate`), so a bad command line fails before anything is built or written.
"""

from __future__ import annotations

import logging

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnexp.errors import ConfigError, RnnexpError

log = logging.getLogger(__name__)

# keys of a data node that describe the task for configs and tools, not constructor arguments
DATA_META_KEYS = ("name", "metric", "metric_mode")


def configure_torch(cfg: DictConfig) -> None:
    """The process-wide torch settings a run asks for: intra-op threads (0: leave them as they
    are) and flushing of float32 denormals to zero on the CPU.

    Also: importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (so that asking "is CUDA
    available?" goes through NVML and never initialises CUDA before a fork), and torch's optimizers
    ask that on every `step()`. Where NVIDIA's NVML library cannot be loaded (no NVIDIA driver),
    each ask tries to load it again, fails and falls back to the very CUDA call the variable avoids:
    ~100 us per optimizer step here for nothing (torch.cuda.is_available() 96-121 us with it set,
    2-7 us without, one call per Adam step). There, and only there, the variable is dropped; call
    this after importing Lightning (rnnexp.training does)."""
    import ctypes
    import os

    import torch

    if cfg.threads and int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    torch.set_flush_denormal(bool(cfg.flush_denormal))
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1":
        try:
            ctypes.CDLL("libnvidia-ml.so.1")  # the library torch.cuda's NVML check loads
        except OSError:
            del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def validate(cfg: DictConfig) -> None:
    """Reject values that would fail later with a less helpful message (or not fail at all).

    Every leaf key is checked against its type and choices (`rnnexp.config_schema`: the types
    conf/ gives each key, the choices in rnnexp.choices), then against its range; then what
    depends on several keys. The first bad key raises ConfigError."""
    from rnnexp.choices import BACKENDS, ELMAN_NONLINEARITIES
    from rnnexp.config_schema import check_ranges, check_types

    check_types(cfg)
    check_ranges(cfg)
    if cfg.model.backend in BACKENDS and cfg.cell.name in ("rnn", "irnn"):
        allowed = ELMAN_NONLINEARITIES[cfg.model.backend]
        if cfg.cell.nonlinearity not in allowed:
            hint = "sigmoid and identity need model.backend=explicit" if cfg.model.backend == "native" else ""
            raise ConfigError("cell.nonlinearity", cfg.cell.nonlinearity, allowed, hint=hint)


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
    from rnnexp.callbacks.fault_injection import FaultInjection

    fault = FaultInjection.from_environment()  # the resume tests' kill points; None otherwise
    if fault is not None:
        callbacks.append(fault)
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
    extra = {}
    if node.get("profiler") is None:
        from rnnexp.lit.profiler import NoProfiler

        extra["profiler"] = NoProfiler()
    return instantiate(node, callbacks=callbacks, logger=loggers or False, **extra)
