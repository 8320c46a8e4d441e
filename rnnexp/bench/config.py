"""The real conf/train.yaml, composed for a benchmark: the same groups and defaults a researcher's
run gets, with the overrides a measurement needs and its output in a scratch directory."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict


def compose_run_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """conf/train.yaml + overrides, as `rnnexp-train` would compose it, writing into output_dir."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import rnnexp.resolvers  # noqa: F401  (registers ${unique_dir:...})
    from rnnexp.train import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.output_root = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the config resolves against this
    return cfg


def data_overrides(dataset: str, source: str) -> list[str]:
    return ["data=seq_mnist", f"data.dataset={dataset}", f"data.source={source}", "data.order=row"]


def quiet_lightning() -> None:
    """Lightning's start-up notices (accelerator, model summary) say nothing about a timing."""
    import pytorch_lightning  # noqa: F401  (its import sets its loggers' level: set ours after it)

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*The given NumPy array is not writable.*")
