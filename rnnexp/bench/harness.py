"""What every section measures with: one step timer, peak memory, and one way to run a fresh process."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

SCRIPT = Path(sys.executable).with_name("rnnexp-train")  # as a researcher runs it: the console script
TRAIN = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "rnnexp.train"]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer:
    """Seconds of steps per named side (after a CUDA sync): `step(name, fn)` times a call, `lap(name)` the
    time since the last reading (steps run elsewhere: a Trainer's), `rounds` the sides in turns, a step
    each: a shared machine's speed drifts by tens of percent within seconds, and steps milliseconds apart
    see the same machine. CPU time only if asked: a system call, charged to whichever side it falls in."""

    def __init__(self, device: str = "cpu", cpu: bool = False):
        self.device, self.cpu, self.mark = device, cpu, (0.0, 0.0)
        self.wall, self.cpu_s = defaultdict(list), defaultdict(list)

    def start(self) -> None:
        synchronize(self.device)
        self.mark = (time.perf_counter(), time.process_time() if self.cpu else 0.0)

    def lap(self, name: str) -> None:
        started = self.mark
        self.start()
        self.wall[name].append(self.mark[0] - started[0])
        self.cpu_s[name].append(self.mark[1] - started[1])

    def step(self, name: str, fn) -> None:
        self.start()
        fn()
        self.lap(name)

    def rounds(self, steps: dict, n: int) -> StepTimer:
        for _ in range(n):
            for name, fn in steps.items():
                self.step(name, fn)
        return self


def autocast_for(precision: str, device: str):
    """What Lightning's mixed-precision plugin wraps the forward in (nothing for 32-true)."""
    if precision in ("16-mixed", "bf16-mixed"):
        return torch.autocast(device_type=device, dtype=torch.float16 if precision == "16-mixed" else torch.bfloat16)
    return contextlib.nullcontext()


def memory_mark(device: str) -> int:
    """Start a peak-memory reading (`memory_growth_mb` ends it): torch's allocator on CUDA; on the CPU
    the resident set, whose peak (VmHWM) Linux resets to the current RSS when /proc/self/clear_refs
    gets a 5. Read a fresh process's first step: a second one reuses what the allocator kept."""
    gc.collect()
    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def memory_growth_mb(device: str, before: int) -> float:
    synchronize(device)
    return ((torch.cuda.max_memory_allocated() if device == "cuda" else _status_bytes("VmHWM")) - before) / 2**20


def _status_bytes(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def run_process(command: list[str], cwd=None, timeout: float | None = None, threads: int = 0, **env: str):
    """Run a process to its end: (wall seconds, its stdout). Its environment is ours and `env` without
    thread-count pins (a test suite sets OMP_NUM_THREADS=1): it picks threads as a run would, or `threads`."""
    pins = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RNNEXP_DEBUG")
    env = {"PYTHONWARNINGS": "ignore", **{k: v for k, v in os.environ.items() if k not in pins}, **env}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.time()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)[:300]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.time() - started, done.stdout


def in_child(function: str, args, env: dict | None = None, **kwargs):
    """`rnnexp.bench.sections.<function>(args, **kwargs)` in a fresh process, for what needs one: a first
    step's memory, a per-thread flag set before torch's first parallel op. The result comes back as JSON."""
    spec = json.dumps({"function": function, "args": vars(args), "kwargs": kwargs})
    out = run_process([sys.executable, "-m", "rnnexp.bench.cli", "--child", spec], **(env or {}))[1]
    return json.loads(out.splitlines()[-1])

