"""The run record, `metrics.json`: what a run scored, how it ended, and with what software.

Written atomically (temp file + rename) so a crash can never leave a half-written record, and
rewritten at each status change, so a reader always finds a complete, current one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

RECORD_NAME = "metrics.json"
STATUSES = ("running", "completed", "failed", "diverged", "interrupted", "pruned")
# a rerun into the same directory skips these (a diverged run would only diverge again; a pruned
# one was stopped by its search)
FINAL_STATUSES = ("completed", "diverged", "pruned")
# a search trial's run: the Optuna state its status stands for (record field `trial.state`)
TRIAL_STATES = {"running": "RUNNING", "interrupted": "RUNNING", "completed": "COMPLETE", "pruned": "PRUNED",
                "failed": "FAIL", "diverged": "FAIL"}


def write_json_atomic(path: Path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=_jsonable)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value):
    if hasattr(value, "item"):  # tensors and numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def to_float(value) -> float:
    value = value.item() if hasattr(value, "item") else value
    return float(value)


def finite_or_none(value):
    """JSON has no NaN: non-finite numbers are recorded as null."""
    value = to_float(value)
    return value if math.isfinite(value) else None


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("rnnexp", "torch", "pytorch-lightning", "hydra-core", "torchmetrics", "tensorboard"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def git_commit() -> str:
    """The commit of the rnnexp checkout the code was run from ("none" outside a git work tree)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "none"
    if out.returncode != 0:
        return "none"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


class RunRecord:
    """Accumulates the record and rewrites metrics.json on every `save`."""

    def __init__(self, run_dir: Path, name: str, overrides: list[str], optimized_metric: str,
                 previous: dict | None = None):
        self.path = Path(run_dir) / RECORD_NAME
        self.started = time.time()
        # a resumed run keeps its history: earlier segments' wall time and when it was resumed
        self.earlier_wall_time = float((previous or {}).get("wall_time_s") or 0.0)
        self.data = {
            "status": "running",
            "name": name,
            "run_dir": str(run_dir),
            "overrides": list(overrides),
            "command": " ".join(sys.argv),
            "optimized_metric": optimized_metric,
            "optimized_value": None,
            "metrics": {},
            "best": {},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "hostname": platform.node(),
        }
        if previous:
            self.data["started_at"] = previous.get("started_at", self.data["started_at"])
            self.data["resumes"] = previous.get("resumes", []) + [{
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "previous_status": previous.get("status")}]

    def update(self, **fields) -> RunRecord:
        self.data.update(fields)
        return self

    def save(self, status: str | None = None) -> None:
        if status is not None:
            assert status in STATUSES, status
            self.data["status"] = status
        if isinstance(self.data.get("trial"), dict):
            self.data["trial"]["state"] = TRIAL_STATES[self.data["status"]]
        self.data["wall_time_s"] = round(self.earlier_wall_time + time.time() - self.started, 3)
        write_json_atomic(self.path, self.data)
