"""Sweep throughput: two jobs through the joblib launcher against the same two jobs one after the other.

    python -m rnnexp.bench.sweep_throughput --steps 3000

Each is one `rnnexp-train -m seed=1,2 ...` command on the real config, timed from start to exit:
    sequential           Hydra's basic launcher: one process runs the jobs in turn, each with
                         torch's default threads (one per core), as a researcher's `-m` does
    sequential, 1 thread the same with OMP_NUM_THREADS=1: the jobs exactly as joblib runs them, one
                         after the other (shows what the launcher itself adds or loses)
    joblib               `-m hydra/launcher=joblib`: one worker process per job at a time (n_jobs=-1,
                         one per core); joblib exports OMP_NUM_THREADS = cores // n_jobs to its
                         workers, so the jobs share the cores without oversubscribing them
throughput ratio = sequential wall / joblib wall. Against the first baseline it cannot exceed
n_jobs / (the speed-up a job gets from n_jobs threads instead of one), which the table's
"train s / job" columns show. The jobs must be long enough that process start-up (the torch and
Lightning imports, paid by every joblib worker but once by a sequential process) does not
dominate: `--steps` training steps each. A probe callback (rnnexp.bench.probe) records each job's
thread count and training time.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TARGET = 1.6
MODES = ("sequential", "sequential, 1 thread", "joblib")
MODE_FLAGS = {"sequential": MODES[0], "sequential_1_thread": MODES[1], "joblib": MODES[2]}  # --sweep-modes names


def job_overrides(steps: int, cell: str = "lstm", hidden_size: int = 128, dataset: str = "fashion_mnist",
                  source: str = "auto", device: str = "cpu") -> list[str]:
    from rnnexp.bench.config import data_overrides

    overrides = [*data_overrides(dataset, source), f"cell={cell}", f"model.hidden_size={hidden_size}",
                 "trainer.max_epochs=-1", f"trainer.max_steps={steps}", "trainer.limit_val_batches=2",
                 "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0",
                 "trainer.enable_progress_bar=false"]
    return (["trainer=gpu"] if device == "cuda" else []) + overrides


def run_sweep(mode: str, steps: int, scratch: Path, timeout: float, **job) -> dict:
    from rnnexp.bench.startup import _timed, child_env, train_command

    sweep_dir = scratch / mode.replace(", ", "_").replace(" ", "_")
    command = [*train_command(), "-m", *(["hydra/launcher=joblib"] if mode == "joblib" else []), "seed=1,2",
               *job_overrides(steps, **job), f"paths.output_root={scratch}/outputs", f"hydra.sweep.dir={sweep_dir}",
               "hydra.sweep.subdir=job${hydra.job.num}",  # short names: the overrides make a path too long
               "+callbacks.bench_probe._target_=rnnexp.bench.probe.RunProbe"]  # -> <job dir>/bench_probe.json
    wall, _ = _timed(command, scratch, timeout, child_env(threads=1 if "1 thread" in mode else None))
    facts = [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("bench_probe.json"))]
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.rglob("metrics.json"))]
    if len(facts) != 2 or len(records) != 2 or any(r.get("status") != "completed" for r in records):
        raise RuntimeError(f"the {mode} sweep did not complete two jobs (records: {records})")
    return {"mode": mode, "wall_s": wall, "threads": [f["threads"] for f in facts],
            "processes": len({f["pid"] for f in facts}),
            "train_s": [f["train_end"] - f["train_start"] for f in facts],
            "steps": [f["global_step"] for f in facts]}


def measure_sweep(steps: int = 1500, repeats: int = 1, cell: str = "lstm", hidden_size: int = 128,
                  dataset: str = "fashion_mnist", source: str = "auto", device: str = "cpu",
                  timeout: float = 1800.0, modes=MODES) -> dict:
    job = {"cell": cell, "hidden_size": hidden_size, "dataset": dataset, "source": source, "device": device}
    modes = [mode for mode in MODES if mode in modes]
    if "sequential" not in modes or "joblib" not in modes:
        raise ValueError(f"modes={modes}: the sweep ratio needs 'sequential' and 'joblib'")
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-sweep-") as scratch:
        for r in range(repeats):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                where = Path(scratch) / f"r{r}"
                where.mkdir(exist_ok=True)
                runs[mode].append(run_sweep(mode, steps, where, timeout, **job))
    rows = []
    for mode in modes:
        wall = statistics.median(run["wall_s"] for run in runs[mode])
        rows.append({"mode": mode, "wall_s": wall, "jobs_per_hour": 2 * 3600 / wall,
                     "train_s_per_job": statistics.median(t for run in runs[mode] for t in run["train_s"]),
                     "threads_per_job": sorted({t for run in runs[mode] for t in run["threads"]}),
                     "processes": runs[mode][0]["processes"], "all_wall_s": [run["wall_s"] for run in runs[mode]]})
    by_mode = {row["mode"]: row for row in rows}
    joblib, sequential = by_mode["joblib"], by_mode["sequential"]
    # a job trains this much faster alone on all the cores than beside the other on its share
    speedup = joblib["train_s_per_job"] / sequential["train_s_per_job"]
    checks = []
    single = by_mode.get("sequential, 1 thread")
    if single:
        checks.append({"name": "sweep: joblib / the same 2 jobs in sequence (1 thread each, as joblib runs them)",
                       "value": single["wall_s"] / joblib["wall_s"], "target": TARGET, "higher_is_better": True,
                       "detail": f"{joblib['wall_s']:.1f} s vs {single['wall_s']:.1f} s"})
    checks.append({"name": "sweep: joblib / basic launcher, torch's default threads per job",
                   "value": sequential["wall_s"] / joblib["wall_s"], "target": None, "higher_is_better": True,
                   "detail": f"{joblib['wall_s']:.1f} s vs {sequential['wall_s']:.1f} s; threads per job "
                             f"{joblib['threads_per_job']} vs {sequential['threads_per_job']}; a job trains "
                             f"{speedup:.2f}x faster alone on all cores, so at most {2 / speedup:.2f} is possible"})
    return {"setup": {**job, "steps": steps, "repeats": repeats, "cores": os.cpu_count()}, "rows": rows,
            "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    table = Table(title=f"two-job sweep, {s['cell'].upper()}-{s['hidden_size']}, {s['steps']} steps per job, "
                        f"{s['cores']} cores (medians of {s['repeats']})")
    for title in ("launcher", "wall s", "jobs / hour", "train s / job", "threads / job", "processes"):
        table.add_column(title, justify="left" if title == "launcher" else "right")
    for row in result["rows"]:
        table.add_row(row["mode"], f"{row['wall_s']:.1f}", f"{row['jobs_per_hour']:.0f}", f"{row['train_s_per_job']:.1f}",
                      ",".join(map(str, row["threads_per_job"])), str(row["processes"]))
    (console or Console(highlight=False)).print(table)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.sweep_throughput",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per job")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--source", default="auto")
    args = parser.parse_args(argv)
    started = time.time()
    result = measure_sweep(args.steps, args.repeats, source=args.source)
    print_result(result)
    print(f"ratio {result['checks'][0]['value']:.2f} ({time.time() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
