"""`rnnexp-train -m cell=rnn,lstm,gru model.bidirectional=false,true data.dataset=fashion_mnist`

runs the same six jobs, in the same order, as Hydra's basic sweeper (every list, range() or
choice() on the command line or in hydra.sweeper.params, crossed; `hydra.sweeper.max_batch_size`
jobs handed to the launcher at a time), but names each job's folder by the swept keys only:
`cell=gru,model.bidirectional=true`, not `cell=gru,data.dataset=fashion_mnist,model.bidirectional=true`.
Each job is also told the swept keys (rnnexp.sweep_naming.VARYING_KEYS_ENV), which TensorBoard's
HParams tab then shows as its first columns.
"""

# no `from __future__ import annotations`: Hydra imports plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from rnnexp.sweep_naming import job_dir_name, job_hydra_overrides, override_key

log = logging.getLogger(__name__)


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.rnnexp_grid_sweeper.grid_sweeper.GridSweeper"
    # jobs handed to the launcher at once (null: all); the next batch starts when these have finished
    max_batch_size: int | None = None
    # more sweeps, as on the command line: {model.hidden_size: "64,128"}
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="rnnexp_grid", node=GridSweeperConf, provider="rnnexp")


def expand_grid(overrides: Sequence[Override]) -> tuple[list[list[str]], list[str]]:
    """The jobs (each a list of `key=value` overrides) and the keys that vary, in command-line order.

    As Hydra's basic sweeper: one list of choices per key, a key given twice keeps its first place
    and its last value, and the jobs are the cartesian product in that order.
    """
    choices: dict[str, list[str]] = {}
    swept: dict[str, bool] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HydraException(
                    f"{override.input_line}: the grid sweeper expands lists, range() and choice(), not "
                    f"{override.value_type.name if override.value_type else 'this sweep'}; "
                    "an interval is searched with hparams_search=optuna")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            swept[key] = True
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
            swept[key] = False
    varying = [override_key(key) for key in choices if swept[key]]
    return [list(job) for job in itertools.product(*choices.values())], varying


def check_distinct_folders(jobs: Sequence[Sequence[str]], names: Sequence[str]) -> None:
    first: dict[str, Sequence[str]] = {}
    for job, name in zip(jobs, names):
        if name in first:
            raise HydraException(f"two jobs of this sweep would share the folder {name!r}: {' '.join(first[name])} "
                                 f"and {' '.join(job)}; a value is listed twice, remove the repeat")
        first[name] = job


class GridSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__()
        if max_batch_size is not None and max_batch_size <= 0 and max_batch_size != -1:
            raise HydraException(f"hydra.sweeper.max_batch_size={max_batch_size}: give a positive number of "
                                 "jobs per batch, or null for all at once")
        self.max_batch_size = None if max_batch_size == -1 else max_batch_size
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def job_batches(self, arguments: list[str]) -> list[list[list[str]]]:
        """Every job's full override list (its own + the Hydra overrides naming its folder), in batches."""
        assert self.hydra_context is not None and self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        jobs, varying = expand_grid(overrides)
        # a one-job multirun is named by its overrides, less those Hydra leaves out of override_dirname
        exclude = list(OmegaConf.select(self.config, "hydra.job.config.override_dirname.exclude_keys", default=[]))
        check_distinct_folders(jobs, [job_dir_name(job, varying, exclude) for job in jobs])
        # a hydra.sweep.subdir given on the command line is the user's choice: keep it
        given = OmegaConf.to_container(self.config.hydra.overrides.hydra, resolve=False)  # as typed: ${...} unread
        user_subdir = any(override_key(o) == "hydra.sweep.subdir" for o in given)
        launched = [job + job_hydra_overrides(job, varying, name_folder=not user_subdir, exclude_keys=exclude)
                    for job in jobs]
        log.info("%d job(s); swept: %s", len(jobs), ", ".join(varying) or "nothing (one job)")
        size = self.max_batch_size or len(launched) or 1
        return [launched[i:i + size] for i in range(0, len(launched), size)]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        batches = self.job_batches(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: list[Sequence[JobReturn]] = []
        first_index = 0
        for batch in batches:
            self.validate_batch_is_legal(batch)  # a composition error stops the sweep before any job starts
            results = self.launcher.launch(batch, initial_job_idx=first_index)
            for result in results:
                _ = result.return_value  # re-raises a job's exception, as the basic sweeper does
            first_index += len(batch)
            returns.append(results)
        return returns
