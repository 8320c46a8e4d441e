"""Shared fixtures: the real config tree, composed with Hydra's compose API and shrunk to run in
seconds on a 2-core machine (a few batches of the bundled MNIST subset, output in tmp_path)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
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


# -- a PostgreSQL server (the shared Optuna study of tests/test_optuna_sweeper.py and test_slurm.py) --
POSTGRES_SCRIPT = REPO / "scripts" / "postgres_server.sh"


@pytest.fixture(scope="session")
def postgres_url():
    """$RNNEXP_TEST_POSTGRES_URL, or a server of scripts/postgres_server.sh started (and stopped) here."""
    url = os.environ.get("RNNEXP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="rnnexp-postgres-")  # under /tmp: the `postgres` user must reach it
    env = {**os.environ, "RNNEXP_POSTGRES_DIR": folder}
    up = subprocess.run([str(POSTGRES_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600,
                        check=False)
    if up.returncode != 0:
        lines = up.stderr.strip().splitlines()
        pytest.skip(f"PostgreSQL cannot start here: {lines[-1] if lines else 'exit ' + str(up.returncode)}")
    yield up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    subprocess.run([str(POSTGRES_SCRIPT), "down", "--purge"], env=env, capture_output=True, timeout=120, check=False)


@pytest.fixture
def fresh_database(postgres_url):
    """A database of this test's own on the server: the workers meet an empty one, as on first use."""
    import psycopg

    name = f"rnnexp_test_{uuid.uuid4().hex[:12]}"
    base = postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
