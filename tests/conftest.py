"""Shared fixtures: the real config tree, composed with Hydra's compose API and shrunk to run in
seconds on a 2-core machine (a few batches of the bundled MNIST subset, output in tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import rnnexp.resolvers  # noqa: F401  registers ${unique_dir:...}

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION = all((FASHION_DIR / f).is_file() for f in (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; CI does)")

# Tests share 2 cores with whatever else runs; one intra-op thread keeps timings predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def compose_config(overrides: list[str] | None = None, output_dir: Path | None = None,
                   shrink: bool = True) -> DictConfig:
    """The real conf/train.yaml with overrides; `shrink` adds debug=fast and the bundled subset."""
    GlobalHydra.instance().clear()
    extra = ["debug=fast", "data.source=bundled", "threads=1"] if shrink else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=extra + list(overrides or []), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.output_root = str(output_dir)
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(["cell=gru", ...]) -> a shrunk, composed config writing into a fresh tmp dir."""
    counter = iter(range(1000))

    def _make(overrides=None, shrink=True):
        return compose_config(overrides, output_dir=tmp_path / f"run{next(counter)}", shrink=shrink)

    yield _make
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """Where the console scripts live (tests that go through the real command line use them)."""
    import sys

    return Path(sys.executable).parent
