"""`hparams_search=optuna`: an Optuna study driven by ask-and-tell through any Hydra launcher.

For each batch of `n_jobs` trials the sweeper asks the study for parameters, launches one
ordinary rnnexp-train job per trial (its overrides plus `trial.storage`, `trial.study_name`,
`trial.number`, so the job can report to its trial from any process or node: the job's
TrialPruning callback reports `val/<metric>` at every validation and stops when the pruner says
so), then tells the study how each job ended, read from the job's run record:

    record status      told to the study
    completed          COMPLETE with the job's optimized value
    pruned             PRUNED (the pruner stopped it; its step is the trial's `pruned_at_step`)
    interrupted        as a stale trial (Ctrl-C): FAIL, or FAIL and queued again with `retry`;
                       the search stops
    anything else      FAIL

While jobs run the sweeper records a heartbeat for each of its trials every `heartbeat_interval`
seconds. A trial whose heartbeat is older than `grace_period` was left RUNNING by a sweeper that
died; before every batch, any worker of the study fails it (`stale_trials: fail`) or fails and
queues it again with the same parameters (`retry`): the worker that takes it runs the job in the
dead trial's run directory, which resumes from its checkpoints/last.ckpt.
"""


import logging
import math
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.rnnexp_optuna_sweeper.search_space import build_space, override_value
from rnnexp import optuna_study as studies
from rnnexp.errors import ConfigError, RnnexpError
from rnnexp.sweep_naming import job_dir_name, job_hydra_overrides

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


@dataclass
class PlannedJob:
    number: int
    trial_id: int
    params: dict
    run_dir: Path
    overrides: list[str]


def job_name(number: int, param_overrides: list[str], searched_keys: list[str]) -> str:
    """`trial=007,cell=gru,optimizer.lr=0.00123`: the trial's number, then the values it searched,
    named as every rnnexp sweep names its jobs (rnnexp.sweep_naming). The number keeps two trials
    that drew the same values (a categorical space) out of each other's folder."""
    return job_dir_name([f"trial={number:03d}", *param_overrides], ["trial", *searched_keys])


class Heartbeat:
    """Records a heartbeat for each trial this sweeper runs, every `interval` s, from a thread."""

    def __init__(self, storage, interval: int):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=self.interval + 5)

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)  # at once: a trial without a heartbeat is never found stale
        with self.lock:
            self.trial_ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.trial_ids.discard(trial_id)

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                trial_ids = sorted(self.trial_ids)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001  a database hiccup must not end the search
                    # (the next beat tries again)
                    log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)


class RnnexpOptunaSweeper(Sweeper):
    def __init__(self, direction: str, storage: str, study_name: str, n_trials: int, n_jobs: int,
                 sampler: DictConfig, pruner: str, pruning: DictConfig, stale_trials: str, max_retries: int,
                 heartbeat_interval: int, grace_period: int, params: DictConfig | None = None):
        self.direction, self.storage_url, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler_options = OmegaConf.to_container(sampler, resolve=True) if sampler is not None else {}
        self.pruner_name = pruner
        self.pruning = OmegaConf.to_container(pruning, resolve=True) if pruning is not None else {}
        self.stale_trials, self.max_retries = stale_trials, max_retries
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # -- checks ----------------------------------------------------------------------------------
    def _check(self) -> None:
        def choose(key: str, value, allowed) -> None:
            if value not in allowed:
                raise ConfigError(f"hydra.sweeper.{key}", value, allowed)

        def at_least(key: str, value, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"hydra.sweeper.{key}", value, f"an integer >= {low}")

        choose("direction", self.direction, studies.DIRECTIONS)
        choose("stale_trials", self.stale_trials, studies.STALE_TRIALS)
        choose("pruner", self.pruner_name, studies.PRUNERS)
        choose("sampler.name", self.sampler_options.get("name"), studies.SAMPLERS)
        at_least("n_trials", self.n_trials, 1)
        at_least("n_jobs", self.n_jobs, 1)
        at_least("max_retries", self.max_retries, 0)
        at_least("heartbeat_interval", self.heartbeat_interval, 1)
        if not isinstance(self.grace_period, int) or self.grace_period <= self.heartbeat_interval:
            raise ConfigError("hydra.sweeper.grace_period", self.grace_period,
                              f"an integer of seconds > hydra.sweeper.heartbeat_interval ({self.heartbeat_interval})")
        if not isinstance(self.study_name, str) or not self.study_name:
            raise ConfigError("hydra.sweeper.study_name", self.study_name, "a non-empty name")
        studies.check_storage_url(self.storage_url)

    # -- the search ------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        with warnings.catch_warnings():
            # ask-and-tell with heartbeats is what this sweeper is; Optuna calls both "experimental"
            warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used with Study")
            warnings.filterwarnings("ignore", message=r".*(fail_stale_trials|RetryHeartbeatStaleTrialCallback)"
                                                      r".* is experimental")
            return self._sweep(arguments)

    def _sweep(self, arguments: list[str]) -> Any:
        try:
            self._check()
            space = build_space(self.params, arguments)
            if not space.distributions:
                raise ConfigError("hydra.sweeper.params", self.params,
                                  hint="nothing to search: give at least one key a choice(...), range(...) or "
                                       "interval(...)")
            study, storage = self._open_study()
        except RnnexpError as exc:
            print(f"rnnexp-train: error: {exc}", file=sys.stderr)
            sys.exit(2)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        study_id = storage.get_study_id_from_name(self.study_name)
        log.info("Study %r in %s (%s): %d trials (%d at a time), pruner %s, stale trials: %s",
                 self.study_name, studies.shown_url(self.storage_url), self.direction, self.n_trials, self.n_jobs,
                 self.pruner_name, self.stale_trials)
        launched, returns = 0, []
        with Heartbeat(storage, self.heartbeat_interval) as heartbeat:
            while launched < self.n_trials:
                self._handle_stale_trials(study)
                batch = [self._plan(study, storage, study_id, space, heartbeat)
                         for _ in range(min(self.n_jobs, self.n_trials - launched))]
                try:
                    results = self.launcher.launch([job.overrides for job in batch], initial_job_idx=self.job_idx)
                except BaseException:
                    for job in batch:  # the sweeper itself stops: its trials are not left RUNNING
                        self._give_up(study, storage, job, "the sweeper stopped")
                        heartbeat.remove(job.trial_id)
                    raise
                self.job_idx += len(batch)
                launched += len(batch)
                interrupted = False
                for job, result in zip(batch, results):
                    interrupted |= self._tell(study, storage, job, result)
                    heartbeat.remove(job.trial_id)
                returns.append(results)
                if interrupted:
                    log.warning("a trial was interrupted: the search stops here; run the same command again "
                                "to continue the study")
                    break
        self._write_results(study)
        return returns

    def _open_study(self):
        import optuna

        storage = studies.open_storage(self.storage_url, self.heartbeat_interval, self.grace_period,
                                       retry=self.stale_trials == "retry", max_retries=self.max_retries)
        study = optuna.create_study(storage=storage, study_name=self.study_name, direction=self.direction,
                                    sampler=studies.sampler_of(self.sampler_options),
                                    pruner=studies.pruner_of(self.pruner_name, self.pruning), load_if_exists=True)
        seed = self.sampler_options.get("seed")
        if seed is not None:
            # A seeded sampler proposes the same start-up points every time it is built: a continued
            # study draws from seed + its number of trials instead, new points yet reproducible.
            earlier = len(study.get_trials(deepcopy=False))
            study.sampler = studies.sampler_of({**self.sampler_options, "seed": int(seed) + earlier})
        existing = study.direction.name.lower()
        if existing != self.direction:
            raise ConfigError("hydra.sweeper.direction", self.direction,
                              hint=f"study {self.study_name!r} in {studies.shown_url(self.storage_url)} was created "
                                   f"to {existing}; pick another hydra.sweeper.study_name")
        return study, storage

    def _handle_stale_trials(self, study) -> None:
        import optuna

        states = optuna.trial.TrialState
        before = {t.number for t in study.get_trials(deepcopy=False, states=(states.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        failed = {t.number for t in study.get_trials(deepcopy=False, states=(states.FAIL,))}
        for number in sorted(before & failed):
            log.warning("trial %d was left RUNNING by a sweeper that stopped: %s", number,
                        "failed and queued again" if self.stale_trials == "retry" else "marked failed")

    def _plan(self, study, storage, study_id: int, space, heartbeat: Heartbeat) -> PlannedJob:
        trial = study.ask(space.distributions)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        heartbeat.add(trial_id)
        params = {key: trial.params[key] for key in space.distributions}
        searched = [f"{key}={override_value(value)}" for key, value in params.items()]
        earlier = trial.user_attrs.get("run_dir")  # a retried trial: back into the dead trial's run directory
        run_dir = Path(earlier) if earlier else self.sweep_dir / job_name(trial.number, searched, list(params))
        if not earlier:
            trial.set_user_attr("run_dir", str(run_dir))
        overrides = [
            *space.fixed,
            *searched,
            f"trial.storage={override_value(self.storage_url)}",
            f"trial.study_name={override_value(self.study_name)}",
            f"trial.number={trial.number}",
            f"hydra.sweep.dir={override_value(str(run_dir.parent))}",
            f"hydra.sweep.subdir={override_value(run_dir.name)}",
            # the searched keys, for the job's TensorBoard columns (its folder is named above)
            *job_hydra_overrides(searched, list(params), name_folder=False),
        ]
        return PlannedJob(trial.number, trial_id, params, run_dir, overrides)

    def _tell(self, study, storage, job: PlannedJob, result) -> bool:
        """Tell the study how the job ended; True when it was interrupted."""
        from optuna.trial import TrialState

        from rnnexp.records import read_record

        record = read_record(job.run_dir) or {}
        status = record.get("status")
        value = result.return_value if result.status == JobStatus.COMPLETED else None
        if status == "interrupted":
            self._give_up(study, storage, job, "its run was interrupted")
            return True
        if status == "pruned":
            step = (record.get("trial") or {}).get("pruned_at_step")
            storage.set_trial_user_attr(job.trial_id, "pruned_at_step", step)
            study.tell(job.number, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("trial %d pruned at step %s (%s)", job.number, step, job.run_dir.name)
        elif status == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(job.number, float(value), skip_if_finished=True)
        else:
            why = record.get("error") or (f"no value of {record.get('optimized_metric')}" if record else
                                          f"no run record in {job.run_dir}")
            log.warning("trial %d failed: %s", job.number, why)
            study.tell(job.number, state=TrialState.FAIL, skip_if_finished=True)
        return False

    def _give_up(self, study, storage, job: PlannedJob, why: str) -> None:
        """A trial this sweeper cannot finish: FAIL, and with `retry` queued again like a stale one."""
        import optuna
        from optuna.trial import TrialState

        try:
            if storage.get_trial(job.trial_id).state != TrialState.RUNNING:
                return
            study.tell(job.number, state=TrialState.FAIL, skip_if_finished=True)
            if self.stale_trials == "retry":
                queue_again = optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=self.max_retries, inherit_intermediate_values=True)
                queue_again(study, storage.get_trial(job.trial_id))
            log.warning("trial %d: %s; %s", job.number, why,
                        "queued again" if self.stale_trials == "retry" else "marked failed")
        except Exception as exc:  # noqa: BLE001  the storage may be what failed; its heartbeat ends the trial
            log.warning("trial %d: %s, and could not be marked: %s", job.number, why, exc)

    def _write_results(self, study) -> None:
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name,
                                   "storage": studies.shown_url(self.storage_url), "direction": self.direction,
                                   "trials": {k: v for k, v in counts.items() if v}}
        if counts["COMPLETE"]:
            best = study.best_trial
            results.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params),
                           best_run_dir=best.user_attrs.get("run_dir"))
            log.info("Best of study %r: %s = %s (trial %d, %s)", self.study_name, "value", best.value, best.number,
                     best.user_attrs.get("run_dir"))
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / RESULTS_FILE)
        log.info("Browse the study: optuna-dashboard %s", studies.shown_url(self.storage_url))
