"""`hydra/launcher=submitit_slurm`: submitit's SLURM launcher (one job array per sweep) with two checks
it lacks (conf/hydra/launcher/submitit_slurm.yaml, docs/slurm.md):

  - before submitting, a request larger than every node of the partition is refused in one line
    naming the key (`hydra.launcher.cpus_per_task=4 > 2 CPUs on any node of partition debug`),
    exit code 2; SLURM would accept it and keep it PENDING for ever;
  - while waiting, an array task that SLURM keeps pending for a reason that cannot resolve
    (`hydra.launcher.rnnexp.never_start_reasons`: PartitionConfig, ReqNodeNotAvail, ...) for
    `stop_pending_after_s` is reported, the sweep's array is cancelled and rnnexp-train exits 1,
    instead of polling for ever.

The waiting reads the queue with `squeue` and the results from submitit's result files, not from
sacct, which clusters without accounting storage (and the test cluster of scripts/slurm_cluster.sh)
cannot answer.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from rnnexp.slurm import cluster

log = logging.getLogger(__name__)

EXIT_BAD_REQUEST, EXIT_STOPPED = 2, 1
ENDED_SETTLE_S = 15.0
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE", "SPECIAL_EXIT"}


def _stop(message: str, code: int) -> None:
    print(f"rnnexp-train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit's SlurmLauncher, checked before it submits and watched while it waits."""

    def __init__(self, rnnexp: Any = None, **params: Any) -> None:
        super().__init__(**params)
        options = OmegaConf.to_container(rnnexp, resolve=True) if OmegaConf.is_config(rnnexp) else dict(rnnexp or {})
        # hydra.launcher.rnnexp.* (defaults: conf/hydra/launcher/rnnexp/slurm.yaml)
        self.check_sizes = bool(options["check_sizes"])
        self.stop_pending_after_s = float(options["stop_pending_after_s"])
        self.never_start_reasons = [str(r) for r in options["never_start_reasons"]]
        self.poll_s = float(options["poll_s"])
        # cpus_per_task follows `threads`; threads=0 (torch's default) asks for one CPU, and the job's
        # torch takes one thread (the OMP_NUM_THREADS line of `setup`)
        self.params["cpus_per_task"] = max(1, int(self.params.get("cpus_per_task") or 0))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        if self.check_sizes:
            self._check_request()
        executor = self._executor()
        sweep_dir = Path(self._sweep_dir())
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        array_id = jobs[0].job_id.split("_")[0]
        log.info("SLURM job array %s: %d tasks (logs: %s)", array_id, len(jobs),
                 Path(str(jobs[0].paths.folder)).parent / f"{array_id}_*")
        self._wait(jobs, [list(o) for o in job_overrides])
        return [job.results()[0] for job in jobs]

    # -- before submitting ----------------------------------------------------------------------
    def _check_request(self) -> None:
        try:
            partition = cluster.query_partition(self.params.get("partition"))
        except KeyError as exc:
            _stop(str(exc.args[0]), EXIT_BAD_REQUEST)
        except cluster.SlurmQueryError as exc:
            _stop(f"hydra/launcher=submitit_slurm: {exc}", EXIT_BAD_REQUEST)
        threads = OmegaConf.select(self.config, "threads", default=0) if self.config is not None else 0
        problem = cluster.request_problem(self.params, partition, threads=int(threads or 0))
        if problem:
            _stop(f"{problem} (ask for less, or pick another partition with hydra.launcher.partition=)",
                  EXIT_BAD_REQUEST)

    def _executor(self):
        """submitit's executor with the launcher's parameters, as the parent class builds it."""
        import submitit

        init = {"folder": self.params["submitit_folder"], "slurm_max_num_timeout": self.params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster="slurm", **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in shared else f"slurm_{key}": value
                                      for key, value in self.params.items()
                                      if key not in ("submitit_folder", "max_num_timeout")})
        return executor

    # -- while waiting --------------------------------------------------------------------------
    def _wait(self, jobs, overrides: list[list[str]]) -> None:
        """Until every task has written its result or ended; stop the sweep on a task that SLURM
        keeps pending for a reason that cannot resolve."""
        array_id = jobs[0].job_id.split("_")[0]
        pending_since: dict[str, float] = {}
        listed: set[str] = set()  # tasks squeue has shown: one missing after that has ended
        # A task requeued (by submitit on USR2, or `scontrol requeue`) shows FAILED or CANCELLED for
        # a moment before it is PENDING again: every task must look ended, without a result, for
        # ENDED_SETTLE_S before the sweep is given up.
        ended_since: float | None = None
        while True:
            waiting = [job for job in jobs if not all(job.task(t).paths.result_pickle.exists()
                                                      for t in range(job.num_tasks))]
            if not waiting:
                return
            try:
                states = cluster.task_states(array_id)
            except cluster.SlurmQueryError as exc:
                log.warning("%s (retrying)", exc)
                states = None
            if states is not None:
                listed.update(job_id for job_id in states)
                ended = {job.job_id: states[job.job_id][0] if job.job_id in states else
                         "gone from the queue" if job.job_id in listed else "not listed yet" for job in waiting}
                now = time.monotonic()
                if all(state in FINAL_STATES or state == "gone from the queue" for state in ended.values()):
                    all_completed = all(state == "COMPLETED" for state in ended.values())
                    ended_since = now if ended_since is None else ended_since
                    if all_completed or now - ended_since >= ENDED_SETTLE_S:
                        self._stop_ended(array_id, ended, jobs, overrides)
                        return  # COMPLETED, its result file not seen yet (a slow shared file system): submitit waits
                    time.sleep(self.poll_s)
                    continue
                ended_since = None
                stuck = []
                for job in waiting:
                    state, reason = states.get(job.job_id, ("", ""))
                    if cluster.never_starts(state, reason, self.never_start_reasons):
                        since = pending_since.setdefault(job.job_id, now)
                        if now - since >= self.stop_pending_after_s:
                            stuck.append((job, reason))
                    else:
                        pending_since.pop(job.job_id, None)
                if stuck:
                    self._stop_stuck(array_id, stuck, jobs, overrides)
            time.sleep(self.poll_s)

    def _stop_ended(self, array_id: str, ended: dict[str, str], jobs, overrides) -> None:
        """Tasks that ended without a result (cancelled, failed outside Python, out of memory, node
        failure, ...): one line each, then exit 1; their runs resume when the sweep is rerun."""
        lost = {job_id: state for job_id, state in ended.items() if state != "COMPLETED"}
        if not lost:
            return
        for job in jobs:
            if job.job_id in lost:
                print(f"rnnexp-train: SLURM job {job.job_id} "
                      f"({' '.join(filter_overrides(overrides[jobs.index(job)]))}) ended {lost[job.job_id]} "
                      f"without a result; its log: {job.paths.stderr}", file=sys.stderr)
        _stop(f"{len(lost)} task(s) of SLURM job array {array_id} ended without a result. Rerun the same "
              f"command with hydra.sweep.dir={self._sweep_dir()}: finished jobs are skipped, the others resume "
              "from their last.ckpt", EXIT_STOPPED)

    def _stop_stuck(self, array_id: str, stuck, jobs, overrides) -> None:
        for job, reason in stuck:
            job_overrides = overrides[jobs.index(job)]
            print(f"rnnexp-train: SLURM job {job.job_id} ({' '.join(filter_overrides(job_overrides))}) "
                  f"pending: {reason}", file=sys.stderr)
        try:
            cluster.cancel(array_id)
        except cluster.SlurmQueryError as exc:
            log.warning("%s", exc)
        reason = stuck[0][1].split(",")[0]
        _stop(f"SLURM keeps {len(stuck)} task(s) of job array {array_id} pending ({reason}), which waiting "
              f"does not resolve: cancelled the array (scontrol show job {stuck[0][0].job_id} says more). "
              f"Fix the request, then rerun the same command with hydra.sweep.dir={self._sweep_dir()}: "
              "finished jobs are skipped", EXIT_STOPPED)

    def _sweep_dir(self) -> str:
        assert self.config is not None
        return str(self.config.hydra.sweep.dir)
