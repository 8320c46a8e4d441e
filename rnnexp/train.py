"""`rnnexp-train`: the console entry point (same as `python -m rnnexp.train`).

Only Hydra and OmegaConf are imported at module level: `--help` and `--cfg job` answer without
loading torch or Lightning. The work happens in `rnnexp.training.train`.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from rnnexp import resolvers  # noqa: F401  (registers ${unique_dir:...} before Hydra composes)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def run_job(cfg: DictConfig) -> float:
    """Train one job; return the value a sweeper optimises.

    In a multirun a failing job is recorded as failed and the sweep goes on (it returns nan);
    a single run exits non-zero with one line that says what was wrong.
    """
    from rnnexp.errors import RnnexpError
    from rnnexp.training import optimized_value, train

    try:
        return optimized_value(train(cfg))
    except Exception as exc:
        if os.environ.get("RNNEXP_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, RnnexpError) else f"{type(exc).__name__}: {exc}"
        print(f"rnnexp-train: error: {message}", file=sys.stderr)
        if _in_multirun():
            print("rnnexp-train: the job is recorded as failed in its metrics.json; the sweep goes on "
                  "(RNNEXP_DEBUG=1 shows the traceback)", file=sys.stderr)
            return float("nan")
        if not isinstance(exc, RnnexpError):
            print("rnnexp-train: set RNNEXP_DEBUG=1 for the full traceback", file=sys.stderr)
        sys.exit(2 if isinstance(exc, RnnexpError) else 1)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)


if __name__ == "__main__":
    main()
