"""`rnnexp-train`: the console entry point (same as `python -m rnnexp.train`).

Only Hydra and OmegaConf are imported at module level: `--help` and `--cfg job` answer without
loading torch or Lightning. The work happens in `rnnexp.training.train`.

`rnnexp-train resume=<run dir>` continues an interrupted run in its own directory: the run's
recorded overrides are replayed with `hydra.run.dir=<run dir>`, and `train` resumes from the
directory's `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnexp import resolvers  # registers ${unique_dir:...} before Hydra composes

# conf/hydra/launcher/joblib.yaml shares its name with the plugin's schema on purpose (so a
# misspelt launcher key is an error); Hydra 1.3 warns about that on every launch.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
EXIT_BAD_INPUT, EXIT_FAILED, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 3, 130


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _fail(message: str, code: int) -> None:
    print(f"rnnexp-train: error: {message}", file=sys.stderr)
    sys.exit(code)


def run_job(cfg: DictConfig) -> float | None:
    """Train one job; return the value a sweeper optimises.

    In a multirun a failing job is recorded (failed / diverged) and the sweep goes on: it returns
    None, which the Optuna sweeper records as a failed trial (a nan would stop the whole study);
    a single run exits non-zero with one line that says what was wrong.
    """
    from rnnexp.errors import ConfigError, DataError, DivergenceError, RnnexpError
    from rnnexp.records import read_record
    from rnnexp.training import optimized_value, train

    try:
        return optimized_value(train(cfg))
    except Exception as exc:
        if os.environ.get("RNNEXP_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, RnnexpError) else f"{type(exc).__name__}: {exc}"
        if _in_multirun():
            print(f"rnnexp-train: job failed: {message}\nrnnexp-train: recorded in its metrics.json; "
                  "the sweep goes on (RNNEXP_DEBUG=1 shows the traceback)", file=sys.stderr)
            return None
        run_dir = str(cfg.paths.output_dir)
        if isinstance(exc, DivergenceError):
            record = read_record(Path(run_dir)) or {}
            good = record.get("last_good_checkpoint") or "none was written yet"
            print(f"rnnexp-train: stopped: {message}\nrnnexp-train: last good checkpoint: {good}", file=sys.stderr)
            sys.exit(EXIT_DIVERGED)
        if isinstance(exc, (ConfigError, DataError)) and run_dir in resolvers.claimed_dirs():
            # A bad command line trained nothing: remove the directory this process just created,
            # so outputs/runs holds runs, not typos.
            shutil.rmtree(run_dir, ignore_errors=True)
        if not isinstance(exc, RnnexpError):
            message += " (RNNEXP_DEBUG=1 shows the traceback)"
        _fail(message, EXIT_BAD_INPUT if isinstance(exc, RnnexpError) else EXIT_FAILED)


def resume_arguments(argv: list[str]) -> list[str]:
    """Rewrite `resume=<run dir>` into that run's own overrides plus `hydra.run.dir=<run dir>`."""
    import yaml

    resume = [a for a in argv if a.startswith("resume=")]
    if not resume:
        return argv
    others = [a for a in argv if not a.startswith("resume=")]
    if len(resume) > 1 or others:
        _fail("resume=<run dir> takes no other arguments: the run continues with its own recorded "
              f"config (got {' '.join(others or resume[1:])})", EXIT_BAD_INPUT)
    run_dir = Path(resume[0].split("=", 1)[1]).expanduser()
    if not run_dir.is_dir():
        _fail(f"resume={run_dir}: no such run directory", EXIT_BAD_INPUT)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        _fail(f"resume={run_dir}: not an rnnexp run directory (no .hydra/overrides.yaml)", EXIT_BAD_INPUT)
    # No checkpoints/last.ckpt yet (killed before its first): `train` starts the run over there.
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    # a sweep's job also gets back the keys its sweep varied (its TensorBoard columns)
    from rnnexp.records import read_record
    from rnnexp.sweep_naming import job_hydra_overrides

    sweep_keys = (read_record(run_dir) or {}).get("sweep_keys") or []
    extra = job_hydra_overrides(overrides, sweep_keys, name_folder=False) if sweep_keys else []
    return [*overrides, *extra, f"hydra.run.dir={run_dir.resolve()}"]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


def main() -> None:
    arguments = resume_arguments(sys.argv[1:])
    if "--help" in arguments or "-h" in arguments:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from rnnexp.train_help import help_text

        overrides = [a for a in arguments if a not in ("--help", "-h", "-m", "--multirun")]
        try:
            print(help_text(overrides))
        except (HydraException, OmegaConfBaseException) as exc:
            _fail(f"{str(exc).splitlines()[0]} (rnnexp-train --help lists each group's options)", EXIT_BAD_INPUT)
        return
    sys.argv = [sys.argv[0], *arguments]
    _hydra_main()


if __name__ == "__main__":
    main()
