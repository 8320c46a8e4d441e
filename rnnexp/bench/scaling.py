"""How training time and memory grow with sequence length, hidden size and batch size.

    python -m rnnexp.bench.scaling                          # LSTM and GRU, native and explicit, CPU
    python -m rnnexp.bench.scaling --cells lstm --steps 5 --out-dir outputs/bench

One axis moves at a time from LSTM/GRU-128, T = 28, batch 128:
    sequence length  28, 112, 784   (an image read as T steps of 784 / T pixels: rows ... pixels)
    hidden size      64, 128, 256, 512
    batch size       32, 128, 512
Each point is the real model (`build_module` on the real config, model.backend=native|explicit)
trained on random inputs of that shape: forward, loss, backward, Adam step.

Affordable by design, so the times are extrapolations, not whole epochs: `--steps` steps are timed
(more, up to 20, while they add up to less than half a second) and their mean is multiplied by the
steps of a 60k-sample epoch (one throwaway step per cell and backend first pays for loading
kernels and thread pools).
Memory is the peak growth of the process's resident set (VmHWM, reset through
/proc/self/clear_refs) during a fresh model's first training step: activations kept for the
backward pass, gradients, the optimizer's state. It is measured in a process of its own, started
with glibc's MALLOC_MMAP_THRESHOLD_ pinned low (4 kB) so that every block but the smallest, once
freed by one point, goes back to the system before the next (otherwise later points would reuse it
and read as growing by nothing); times are taken in the calling process, whose allocator is left
as every run has it.
On CUDA the memory is torch's max_memory_allocated growth.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

SEQ_LENS = (28, 112, 784)
HIDDEN_SIZES = (64, 128, 256, 512)
BATCH_SIZES = (32, 128, 512)
BASE = {"seq_len": 28, "hidden_size": 128, "batch_size": 128}
EPOCH_SAMPLES = 60_000
MIN_TIMED_S, MAX_STEPS = 0.5, 20


def scaling_points(seq_lens=SEQ_LENS, hidden_sizes=HIDDEN_SIZES, batch_sizes=BATCH_SIZES, base=None) -> list[dict]:
    """One axis at a time from `base` (BASE); the base point appears once, under the first axis."""
    base = {**BASE, **(base or {})}
    points, seen = [], set()
    for axis, key, values in (("seq_len", "seq_len", seq_lens), ("hidden_size", "hidden_size", hidden_sizes),
                              ("batch_size", "batch_size", batch_sizes)):
        for value in values:
            point = {**base, key: value}
            signature = tuple(point.values())
            if signature in seen:
                continue
            seen.add(signature)
            points.append({"axis": axis, **point})
    return points


# -- inside a child process -------------------------------------------------------------------
def _module(cell: str, backend: str, point: dict, device: str):
    from rnnexp.bench.config import compose_run_config
    from rnnexp.build import build_module, configure_torch
    from rnnexp.data.task import TaskSpec

    name, compiled = backend.removesuffix("+compile"), backend.endswith("+compile")
    cfg = compose_run_config([f"cell={cell}", f"model.backend={name}", f"model.hidden_size={point['hidden_size']}",
                              f"model.compile={str(compiled).lower()}"], tempfile.gettempdir())
    configure_torch(cfg)  # denormal flushing as a run has it (threads=0 in cfg: the child's stay)
    features = 784 // point["seq_len"]
    task = TaskSpec(kind="classify_last", input_size=features, output_size=10, seq_len=point["seq_len"], baseline=0.1)
    return build_module(cfg, task).to(device), features


def _stepper(module, x, y, precision: str, device: str):
    from rnnexp.bench.plain_loop import autocast_for

    optimizer = module.optimizer_factory(params=module.parameters())

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(precision, device):
            loss = module.loss(module(x)[0], y)
        loss.backward()
        optimizer.step()
    return step


def _measure_point(kind: str, cell: str, backend: str, point: dict, steps: int, device: str, precision: str) -> dict:
    import torch

    from rnnexp.bench.memory import _reset_peak_rss, _status_kb
    from rnnexp.bench.plain_loop import synchronize

    torch.manual_seed(0)
    module, features = _module(cell, backend, point, device)
    x = torch.randn(point["batch_size"], point["seq_len"], features, device=device)
    y = torch.randint(0, 10, (point["batch_size"],), device=device)
    step = _stepper(module, x, y, precision, device)
    if kind == "memory":
        gc.collect()
        if device == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _status_kb("VmRSS") * 1024
            _reset_peak_rss()  # the peak (VmHWM) starts again from the current RSS
        step()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else _status_kb("VmHWM") * 1024
        return {"peak_growth_mb": (peak - before) / 2**20}
    synchronize(device)  # no warm-up per point: the first step of a (cell, backend) was thrown away
    started, done = time.perf_counter(), 0
    # at least `steps`; short steps go on to MIN_TIMED_S (at most MAX_STEPS) for a steadier mean
    while done < steps or (time.perf_counter() - started < MIN_TIMED_S and done < MAX_STEPS):
        step()
        synchronize(device)
        done += 1
    step_s = (time.perf_counter() - started) / done
    return {"step_ms": 1e3 * step_s, "epoch_s": step_s * math.ceil(EPOCH_SAMPLES / point["batch_size"]),
            "timed_steps": done}


def _child(spec: dict) -> list[dict]:
    import torch

    from rnnexp.bench.config import quiet_lightning

    quiet_lightning()
    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    runs = [(cell, backend, point) for cell in spec["cells"] for backend in spec["backends"] for point in spec["points"]]
    for cell in spec["cells"]:
        for backend in spec["backends"]:
            # a throwaway first step: the first call of a kernel pays for loading and thread pools
            _measure_point("time", cell, backend, {**spec["base"], "batch_size": 8}, 1, spec["device"],
                           spec["precision"])
    order = range(len(runs))
    if spec["kind"] == "memory":
        # Smallest first: after a large step the process keeps some of what it freed (the allocator's
        # own bookkeeping, not the tensors), and a smaller step after it would partly reuse that.
        order = sorted(order, key=lambda i: _size(runs[i][2]))
    rows: list[dict | None] = [None] * len(runs)
    for i in order:
        cell, backend, point = runs[i]
        result = _measure_point(spec["kind"], cell, backend, point, spec["steps"], spec["device"], spec["precision"])
        rows[i] = {"cell": cell, "backend": backend, **point, **result}
        print(json.dumps(rows[i]), file=sys.stderr, flush=True)  # progress, for the impatient
    return rows


def _size(point: dict) -> int:
    return point["seq_len"] * point["hidden_size"] * point["batch_size"]


# -- the parent ---------------------------------------------------------------------------------
def _run_child(kind: str, spec: dict, timeout: float) -> list[dict]:
    from rnnexp.bench.startup import json_from_child

    env = dict(os.environ)
    if kind == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "4096"  # freed blocks (all but the smallest) leave the process at once
        env["MALLOC_TRIM_THRESHOLD_"] = "0"
    env.setdefault("PYTHONWARNINGS", "ignore")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({**spec, "kind": kind}, f)
    try:
        return json_from_child([sys.executable, "-m", "rnnexp.bench.scaling", "--child", f.name],
                               f"scaling {kind}", env=env, timeout=timeout)
    finally:
        os.unlink(f.name)


def measure_scaling(cells=("lstm", "gru"), backends=("native", "explicit"), steps: int = 2, threads: int = 2,
                    seq_lens=SEQ_LENS, hidden_sizes=HIDDEN_SIZES, batch_sizes=BATCH_SIZES, device: str = "cpu",
                    precision: str = "32-true", out_dir: str | Path | None = None, timeout: float = 3600.0,
                    base: dict | None = None) -> dict:
    base = {**BASE, **(base or {})}
    spec = {"cells": list(cells), "backends": list(backends), "steps": steps, "threads": threads, "device": device,
            "precision": precision, "base": base, "points": scaling_points(seq_lens, hidden_sizes, batch_sizes, base)}
    times = _child({**spec, "kind": "time"})  # here: the allocator as every run has it
    memory = _run_child("memory", spec, timeout)
    rows = [{**t, "peak_growth_mb": m["peak_growth_mb"]} for t, m in zip(times, memory)]
    result = {"setup": {k: v for k, v in spec.items() if k != "points"}, "rows": rows}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result["plot"] = str(plot_scaling(rows, out_dir / "scaling.png", result["setup"]))
        (out_dir / "scaling.json").write_text(json.dumps(result, indent=1))
    return result


def plot_scaling(rows: list[dict], path: Path, setup: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    axes_keys = [("seq_len", "sequence length T"), ("hidden_size", "hidden size"), ("batch_size", "batch size")]
    fig = Figure(figsize=(13, 7), dpi=100, layout="constrained")
    grid = fig.subplots(2, 3)
    series = sorted({(r["cell"], r["backend"]) for r in rows})
    for col, (axis, label) in enumerate(axes_keys):
        for cell, backend in series:
            points = sorted((r for r in rows if r["cell"] == cell and r["backend"] == backend and
                             all(r[k] == setup["base"][k] for k in BASE if k != axis)), key=lambda r: r[axis])
            style = {"marker": "o", "linestyle": "-" if backend == "native" else "--", "label": f"{cell} {backend}"}
            grid[0, col].plot([p[axis] for p in points], [p["epoch_s"] for p in points], **style)
            grid[1, col].plot([p[axis] for p in points], [p["peak_growth_mb"] for p in points], **style)
        for row, ylabel in ((0, "s / epoch (60k, extrapolated)"), (1, "peak memory growth, MB")):
            ax = grid[row, col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
    grid[0, 0].legend(fontsize=8)
    others = ", ".join(f"{k}={v}" for k, v in setup["base"].items())
    fig.suptitle(f"training step scaling from {others}; {setup['device']}, {setup['threads']} threads, "
                 f"{setup['precision']}; time from {setup['steps']} steps")
    fig.savefig(path)
    return path


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    table = Table(title=f"scaling ({s['device']}, {s['threads']} threads; s/epoch extrapolated from {s['steps']} "
                        "timed steps to 60k samples; memory: peak growth of a first training step)")
    for title in ("cell", "backend", "T", "H", "B", "ms/step", "s/epoch", "peak MB"):
        table.add_column(title, justify="left" if title in ("cell", "backend") else "right")
    for r in result["rows"]:
        table.add_row(r["cell"], r["backend"], str(r["seq_len"]), str(r["hidden_size"]), str(r["batch_size"]),
                      f"{r['step_ms']:.1f}", f"{r['epoch_s']:.1f}", f"{r['peak_growth_mb']:.1f}")
    (console or Console(highlight=False)).print(table)
    if result.get("plot"):
        (console or Console(highlight=False)).print(f"plot: {result['plot']}")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--backends", default="native,explicit")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps per point (at least)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-lens", type=_ints, default=SEQ_LENS)
    parser.add_argument("--hidden-sizes", type=_ints, default=HIDDEN_SIZES)
    parser.add_argument("--batch-sizes", type=_ints, default=BATCH_SIZES)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "16-mixed", "bf16-mixed"))
    parser.add_argument("--out-dir", default="outputs/bench", help="where scaling.png and scaling.json go")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(Path(args.child).read_text()))))
        return 0
    result = measure_scaling(args.cells.split(","), args.backends.split(","), args.steps, args.threads, args.seq_lens,
                             args.hidden_sizes, args.batch_sizes, args.device, args.precision, args.out_dir)
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
