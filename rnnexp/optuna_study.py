"""One home for what the sweeper and the trials' jobs both build from `hydra.sweeper`: the
storage, the sampler, the pruner, and (inside a job) the trial it reports to.

Here in rnnexp, not in the sweeper plugin: the trial's job (rnnexp.callbacks.trial_pruning) uses
it too, and the package does not import from hydra_plugins. Optuna is imported inside the
functions: the sweeper plugin, which Hydra imports on every start, imports this module.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnexp.errors import ConfigError

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")
STALE_TRIALS = ("fail", "retry")
TRIES = 5  # opening a storage that other workers are creating at the same moment


def pruner_of(name: str, options: Mapping[str, Any]):
    """`hydra.sweeper.pruner` with its `hydra.sweeper.pruning` settings.

    median: a trial stops when its reported value at a step is worse than the median of the
    finished trials' values at that step (after `n_startup_trials` finished trials, and not before
    step `n_warmup_steps`). hyperband: successive halving brackets over the steps, from
    `min_resource` steps; `max_resource` is the last step of the first trial to finish."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(options["n_startup_trials"]),
                                           n_warmup_steps=int(options["n_warmup_steps"]),
                                           interval_steps=int(options["interval_steps"]))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(options["min_resource"]), max_resource="auto",
                                              reduction_factor=int(options["reduction_factor"]))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError("hydra.sweeper.pruner", name, PRUNERS)


def sampler_of(options: Mapping[str, Any]):
    import optuna

    name, seed = options["name"], options["seed"]
    seed = None if seed is None else int(seed)
    if name == "tpe":
        # constant_liar: trials running in parallel (n_jobs > 1, or other workers of the study) count
        # as bad ones while they run, so parallel workers do not all propose the same point
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(options["n_startup_trials"]),
                                          constant_liar=bool(options["constant_liar"]))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError("hydra.sweeper.sampler.name", name, SAMPLERS)


def check_storage_url(url: Any) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("hydra.sweeper.storage", url, "a database URL: sqlite:///<file> (one machine) or "
                          "postgresql://<user>@<host>:<port>/<database> (many workers)")
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        # the folder of a SQLite file is created, as the run directories are
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def engine_url(url: str) -> str:
    """`postgresql://` through psycopg 3 (rnnexp's `postgres` extra), whatever SQLAlchemy's default
    driver for the scheme is (psycopg2 before SQLAlchemy 2.1)."""
    return "postgresql+psycopg://" + url[len("postgresql://"):] if url.startswith("postgresql://") else url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retry: bool = False, max_retries: int | None = None):
    """An RDB storage; with a heartbeat, a trial whose sweeper stopped sending it for
    `grace_period` s is stale: failed by the next `fail_stale_trials`, and with `retry` queued again
    (same parameters, same user attributes, its reported values) for the next worker to take."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from sqlalchemy.exc import DBAPIError

    for attempt in range(TRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats and retries are "experimental"
                callback = optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retries, inherit_intermediate_values=True) if retry else None
                return optuna.storages.RDBStorage(engine_url(url), heartbeat_interval=heartbeat_interval,
                                                  grace_period=grace_period, heartbeat_stale_trial_callback=callback)
        except DBAPIError as exc:
            # Workers started together on an empty database all create Optuna's tables, and all but
            # one fail (a duplicate key in PostgreSQL's catalog); on the next try the tables exist.
            if attempt == TRIES - 1:
                first_line = str(exc.orig or exc).strip().splitlines()[0]
                raise ConfigError("hydra.sweeper.storage", shown_url(url),
                                  hint=f"the database could not be opened: {first_line}") from exc
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def shown_url(url: str) -> str:
    """The URL without its password, for logs and result files."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_trial(url: str, study_name: str, number: int, pruner):
    """(trial, None) for a job to report to, or (None, why) when trial `number` of the study is
    no longer RUNNING (a finished trial's run resumed by hand): the run then reports nothing."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(engine_url(url))
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                              sampler=optuna.samplers.RandomSampler())  # a job never samples
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
    state = storage.get_trial(trial_id).state
    if state != TrialState.RUNNING:
        return None, f"trial {number} of study {study_name!r} is {state.name}"
    return optuna.trial.Trial(study, trial_id), None
