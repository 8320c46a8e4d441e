"""Float32 denormals on the CPU: a training step through a long sequence with them kept (IEEE
gradual underflow) and flushed to zero (`flush_denormal: true`, the default).

    python -m rnnexp.bench.denormals              # LSTM-128, T = 784 pixel sequences, batch 128

Backpropagating through hundreds of steps drives LSTM and GRU gradients below float32's smallest
normal number (~1.2e-38), and x86 CPUs compute on such denormals many times slower than on normal
numbers. The model is the real one (`build_module` on data=seq_mnist data.order=pixel) from the
same seed for every timing; the step is forward, backward and the optimizer's update on random
pixel intensities, so only the arithmetic is timed: the median of `repeats` steps after a warm-up.

Each setting runs in a fresh process. Flushing is a flag of each CPU thread, which threads take
from the thread that creates them: set before torch's first parallel op (as `rnnexp-train` does),
it holds in the intra-op threads too; set later, only in the calling thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

SETTINGS = {"denormals kept": False, "denormals flushed": True}


def time_steps(flush: bool, seq_len: int, hidden_size: int, batch_size: int, cell: str, repeats: int,
               threads: int) -> list[float]:
    """In this process, which must not have run a parallel torch op yet: seconds per training step."""
    import pytorch_lightning as pl
    import torch

    from rnnexp.bench.config import compose_run_config
    from rnnexp.bench.scaling import _stepper
    from rnnexp.build import build_module
    from rnnexp.data.task import TaskSpec

    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(flush)  # before any op: the intra-op threads are created with it
    cfg = compose_run_config(["data=seq_mnist", "data.order=pixel", f"cell={cell}", f"model.hidden_size={hidden_size}"],
                             tempfile.gettempdir())

    def timed_step(length: int) -> float:
        pl.seed_everything(0, verbose=False)
        task = TaskSpec(kind="classify_last", input_size=1, output_size=10, seq_len=length, baseline=0.1)
        x, y = torch.rand(batch_size, length, 1), torch.randint(0, 10, (batch_size,))
        step = _stepper(build_module(cfg, task), x, y, "32-true", "cpu")
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    timed_step(28)  # warm-up: the first calls of the kernels pay for loading them
    return [timed_step(seq_len) for _ in range(repeats)]


def measure_denormals(seq_len: int = 784, hidden_size: int = 128, batch_size: int = 128, cell: str = "lstm",
                      repeats: int = 3, threads: int = 2) -> dict:
    from rnnexp.bench.startup import child_env, json_from_child

    times = {}
    for name, flush in SETTINGS.items():
        command = [sys.executable, "-m", "rnnexp.bench.denormals", "--child", "flushed" if flush else "kept",
                   "--seq-len", str(seq_len), "--hidden-size", str(hidden_size), "--batch-size", str(batch_size),
                   "--cell", cell, "--repeats", str(repeats), "--threads", str(threads)]
        times[name] = json_from_child(command, f"'{name}'", env=child_env())
    rows = [{"setting": name, "flush_denormal": flush, "step_s": statistics.median(times[name]),
             "all_s": times[name]} for name, flush in SETTINGS.items()]
    kept, flushed = (row["step_s"] for row in rows)
    checks = [{"name": f"denormals: flushed / kept step time, {cell.upper()}-{hidden_size}, T={seq_len} (CPU)",
               "value": flushed / kept, "target": None,
               "detail": f"{flushed:.2f} vs {kept:.2f} s per training step; flush_denormal: true is the default"}]
    return {"setup": {"seq_len": seq_len, "hidden_size": hidden_size, "batch_size": batch_size, "cell": cell,
                      "repeats": repeats, "threads": threads, "device": "cpu"}, "rows": rows, "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    table = Table(title=f"denormals: {s['cell'].upper()}-{s['hidden_size']}, T={s['seq_len']}, batch "
                        f"{s['batch_size']}, {s['threads']} threads, CPU (medians of {s['repeats']}, a process each)")
    for title in ("setting", "s / training step"):
        table.add_column(title, justify="left" if title == "setting" else "right")
    for row in result["rows"]:
        table.add_row(row["setting"], f"{row['step_s']:.3f}")
    (console or Console(highlight=False)).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.denormals", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=784)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=("kept", "flushed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(time_steps(args.child == "flushed", args.seq_len, args.hidden_size, args.batch_size,
                                    args.cell, args.repeats, args.threads)))
        return 0
    result = measure_denormals(args.seq_len, args.hidden_size, args.batch_size, args.cell, args.repeats, args.threads)
    print_result(result)
    print(f"flushed / kept: {result['checks'][0]['value']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
