"""Start-up: how long `rnnexp-train` takes to answer, and to reach its first training step.

    python -m rnnexp.bench.startup

Each is the wall time of a fresh `rnnexp-train` process, as a researcher meets it:
    --cfg job     compose and print the config (no torch: `rnnexp.train` imports only Hydra)
    --help        Hydra's help
    first step    a real one-step run on the real config: from starting the process to the end of
                  its first training step, read from a probe callback added on the command line
                  (rnnexp.bench.probe); of which the part before the callbacks are built: Python,
                  Hydra, the torch and Lightning imports, data decoding, the model
Repeated; medians are reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--cfg job": 1.5, "--help": 1.5}


def train_command() -> list[str]:
    """The console script next to this interpreter (a venv's bin/), else `python -m rnnexp.train`."""
    script = Path(sys.executable).parent / "rnnexp-train"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rnnexp.train"]


def child_env(threads: int | None = None) -> dict:
    """The caller's environment without thread-count pins (a test suite sets OMP_NUM_THREADS=1), so
    each process picks its threads as a researcher's would, or `threads` when given."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RNNEXP_DEBUG")}
    env.setdefault("PYTHONWARNINGS", "ignore")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def json_from_child(command: list[str], what: str, env: dict | None = None, timeout: float | None = None):
    """Run a measuring child process and return its result: the last line of its stdout that is a
    JSON object or list. A failure raises with the end of its stderr."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("{", "["))]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {what} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _timed(command: list[str], cwd: Path, timeout: float, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.time()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done


def probe_overrides(path: Path) -> list[str]:
    return ["+callbacks.bench_probe._target_=rnnexp.bench.probe.RunProbe", f"+callbacks.bench_probe.path={path}"]


def measure_startup(repeats: int = 3, dataset: str = "fashion_mnist", source: str = "auto", threads: int = 2,
                    device: str = "cpu", timeout: float = 300.0) -> dict:
    from rnnexp.bench.config import data_overrides

    env = child_env()
    samples: dict[str, list[float]] = {"--cfg job": [], "--help": [], "first step": [], "before the Trainer": [],
                                       "one-step run, whole process": []}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-startup-") as scratch:
        scratch = Path(scratch)
        base = train_command()
        where = [f"paths.output_root={scratch}/outputs"]
        for r in range(repeats):
            samples["--cfg job"].append(_timed([*base, "--cfg", "job", *where], scratch, timeout, env)[0])
            samples["--help"].append(_timed([*base, "--help"], scratch, timeout, env)[0])
            probe = scratch / f"probe{r}.json"
            run = [*base, *data_overrides(dataset, source), f"threads={threads}", "trainer.max_epochs=-1",
                   "trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                   "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
                   f"hydra.run.dir={scratch}/run{r}", *probe_overrides(probe), *where]
            if device == "cuda":
                run.insert(len(base), "trainer=gpu")
            started = time.time()
            total, _ = _timed(run, scratch, timeout, env)
            facts = json.loads(probe.read_text())
            samples["first step"].append(facts["first_step_end"] - started)
            samples["before the Trainer"].append(facts["created"] - started)
            samples["one-step run, whole process"].append(total)
    rows = [{"what": what, "median_s": statistics.median(values), "min_s": min(values), "all_s": values}
            for what, values in samples.items()]
    checks = [{"name": f"start-up: rnnexp-train {what} (s)", "value": row["median_s"], "target": TARGETS[what],
               "detail": f"min {row['min_s']:.2f} s of {repeats}"}
              for what, row in ((r["what"], r) for r in rows) if what in TARGETS]
    return {"setup": {"repeats": repeats, "dataset": dataset, "source": source, "threads": threads,
                      "command": " ".join(base)}, "rows": rows, "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    table = Table(title=f"start-up of rnnexp-train (wall s, medians of {s['repeats']}; first step: "
                        f"{s['dataset']}, {s['threads']} threads)")
    for title in ("what", "median s", "min s"):
        table.add_column(title, justify="left" if title == "what" else "right")
    labels = {"first step": "to the end of the first training step",
              "before the Trainer": "  of which imports, data decoding, model (before the Trainer)",
              "one-step run, whole process": "one-step run, whole process (with validation, test, record)"}
    for row in result["rows"]:
        table.add_row(labels.get(row["what"], row["what"]), f"{row['median_s']:.2f}", f"{row['min_s']:.2f}")
    (console or Console(highlight=False)).print(table)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print_result(measure_startup(args.repeats, source=args.source, threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
