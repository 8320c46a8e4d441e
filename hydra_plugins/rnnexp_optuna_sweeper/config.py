"""The schema of `hydra/sweeper: rnnexp_optuna` (registered with Hydra's ConfigStore). Values
come from conf/hparams_search/optuna.yaml: every field here is mandatory, so the defaults have one
home, and a misspelt key under hydra.sweeper is an error instead of being ignored."""


from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConf:
    name: str = MISSING  # tpe | random
    seed: int | None = MISSING
    n_startup_trials: int = MISSING  # tpe: random trials before it models the space
    constant_liar: bool = MISSING  # tpe: running trials count as bad, so parallel workers spread out


@dataclass
class PruningConf:
    n_startup_trials: int = MISSING  # median: finished trials before any is pruned
    n_warmup_steps: int = MISSING  # median: no pruning before this optimizer step of a trial
    interval_steps: int = MISSING  # median: prune only at steps that are multiples of this
    min_resource: int = MISSING  # hyperband: steps every trial gets
    reduction_factor: int = MISSING  # hyperband: 1/reduction_factor of the trials go on at each rung


@dataclass
class RnnexpOptunaSweeperConf:
    _target_: str = "hydra_plugins.rnnexp_optuna_sweeper.sweeper.RnnexpOptunaSweeper"
    direction: str = MISSING
    storage: str = MISSING
    study_name: str = MISSING
    n_trials: int = MISSING
    n_jobs: int = MISSING
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: str = MISSING
    pruning: PruningConf = field(default_factory=PruningConf)
    stale_trials: str = MISSING
    max_retries: int = MISSING
    heartbeat_interval: int = MISSING
    grace_period: int = MISSING
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="rnnexp_optuna", node=RnnexpOptunaSweeperConf,
                             provider="rnnexp")
