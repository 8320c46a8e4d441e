"""The real conf/train.yaml, composed for a benchmark: the groups and defaults a researcher's run gets,
with the overrides a measurement needs and its output in a scratch directory."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import rnnexp.resolvers  # noqa: F401  (registers ${unique_dir:...})
from rnnexp.train import CONFIG_DIR


def compose_run_config(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """conf/train.yaml + overrides, as `rnnexp-train` would compose it, writing into output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.paths.output_root = cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the config resolves against this
    return cfg


def run_overrides(a, threads: bool = True, progress_bar: bool = False) -> list[str]:
    """A benchmarked run's command line for rnnexp-bench's args `a` (validation, test: one batch each)."""
    return [*(["trainer=gpu"] if a.device == "cuda" else []), "data=seq_mnist", f"data.dataset={a.dataset}",
            f"data.source={a.source}", "data.order=row", f"data.batch_size={a.batch_size}", f"cell={a.cell}",
            f"model.hidden_size={a.hidden_size}", *([f"threads={a.threads}"] if threads else []),
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
            f"trainer.enable_progress_bar={str(progress_bar).lower()}", f"trainer.precision={a.precision}"]

