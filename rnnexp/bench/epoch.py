"""rnnexp's training epoch against the plain PyTorch loop, in one process, in turns.

    python -m rnnexp.bench.epoch                      # Fashion-MNIST rows, LSTM-128, batch 128, 2 threads
    python -m rnnexp.bench.epoch --steps 0 --repeats 5   # whole epochs (422 batches)

The rnnexp side is a Trainer built by `rnnexp.build` from the real config (conf/train.yaml with its
default callbacks, TensorBoard logger and checkpoints), exactly as `rnnexp.training.train` builds it;
the plain side (`rnnexp.bench.plain_loop`) trains the same model (same seed, same initial weights,
same optimizer config) on the same in-memory tensors, batch size and thread count.

What is timed on the rnnexp side is the training epoch, from `on_train_epoch_start` to the end of
the last training batch: every per-step cost (data fetch, logging, metrics, callbacks, the progress
bar, periodic checkpoints) is inside, Trainer set-up and the validation pass after the last batch
are not (the plain loop has neither). Variants run in turns, repeat after repeat (the order rotated),
so that load from other processes, which drifts, falls on each alike; medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import statistics
import tempfile
import time
from pathlib import Path

from rnnexp.bench.config import compose_run_config, data_overrides, quiet_lightning

VARIANTS = ("plain", "rnnexp, bar off", "rnnexp, bar on")
TARGETS = {"rnnexp, bar off": 1.05, "rnnexp, bar on": 1.10}


def epoch_overrides(cell: str = "lstm", hidden_size: int = 128, batch_size: int = 128, steps: int = 0,
                    threads: int = 2, seed: int = 0, dataset: str = "fashion_mnist", source: str = "auto",
                    device: str = "cpu", precision: str = "32-true", progress_bar: bool = False) -> list[str]:
    overrides = [*data_overrides(dataset, source), f"cell={cell}", f"model.hidden_size={hidden_size}",
                 f"data.batch_size={batch_size}", f"threads={threads}", f"seed={seed}",
                 "trainer.max_epochs=1", f"trainer.limit_train_batches={steps if steps > 0 else 1.0}",
                 # validation and test run outside the timed epoch: one batch each keeps them short
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0",
                 f"trainer.enable_progress_bar={str(progress_bar).lower()}", f"trainer.precision={precision}"]
    if device == "cuda":
        overrides.insert(0, "trainer=gpu")
    return overrides


def _timer_class():
    import pytorch_lightning as pl

    from rnnexp.bench.plain_loop import synchronize

    class EpochTimer(pl.Callback):
        """Wall and CPU seconds from the epoch's start to the end of its last training batch."""

        def __init__(self, device: str = "cpu"):
            self.device, self.result = device, None

        def on_train_epoch_start(self, trainer, pl_module):
            synchronize(self.device)
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 == trainer.num_training_batches and self.result is None:
                synchronize(self.device)
                self.result = {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu,
                               "steps": batch_idx + 1}

    return EpochTimer


def rnnexp_epoch(cfg, datamodule, device: str = "cpu") -> dict:
    """One epoch through a Trainer built as `rnnexp.training.train` builds it (data module shared)."""
    import pytorch_lightning as pl
    import torch

    from rnnexp.build import build_callbacks, build_loggers, build_module, build_trainer, validate

    validate(cfg)
    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_module(cfg, datamodule.task)
    timer = _timer_class()(device)
    callbacks = [*build_callbacks(cfg), timer]
    trainer = build_trainer(cfg, callbacks, build_loggers(cfg), manual_optimization=not module.automatic_optimization)
    with contextlib.redirect_stdout(io.StringIO()):  # the model summary table, once per run: noise here
        trainer.fit(module, datamodule=datamodule)
    if timer.result is None:
        raise RuntimeError("the training epoch did not finish its batches")
    return timer.result


def measure_epoch(cell: str = "lstm", hidden_size: int = 128, batch_size: int = 128, steps: int = 100,
                  threads: int = 2, repeats: int = 9, seed: int = 0, dataset: str = "fashion_mnist",
                  source: str = "auto", device: str = "cpu", precision: str = "32-true") -> dict:
    """Median seconds per epoch (or per `steps` batches) of the plain loop and of rnnexp with the
    progress bar off and on, and the ratios rnnexp / plain: the median of the repeats' ratios (wall
    time; also CPU time), with the ratio of the minima beside it."""
    import pytorch_lightning as pl
    import torch

    from rnnexp.bench.plain_loop import plain_epoch
    from rnnexp.build import build_datamodule, build_module

    quiet_lightning()
    if threads > 0:
        torch.set_num_threads(threads)
    common = {"cell": cell, "hidden_size": hidden_size, "batch_size": batch_size, "steps": steps, "threads": threads,
              "seed": seed, "dataset": dataset, "source": source, "device": device, "precision": precision}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-epoch-") as scratch:
        runs = iter(range(10_000))

        def config(progress_bar: bool, limit: int | None = None):
            overrides = epoch_overrides(**{**common, "steps": limit if limit is not None else steps},
                                        progress_bar=progress_bar)
            return compose_run_config(overrides, Path(scratch) / f"run{next(runs)}")

        datamodule = build_datamodule(config(False)).prepare()
        train_split = datamodule.splits[0]

        def plain(limit: int = steps) -> dict:
            pl.seed_everything(seed, verbose=False)
            module = build_module(config(False), datamodule.task)  # the same initial weights as rnnexp's
            return plain_epoch(module, train_split.inputs, train_split.targets, batch_size, limit, seed=seed,
                               device=device, precision=precision)

        measure = {"plain": plain,
                   "rnnexp, bar off": lambda: rnnexp_epoch(config(False), datamodule, device),
                   "rnnexp, bar on": lambda: rnnexp_epoch(config(True), datamodule, device)}
        # warm-up: first calls pay for lazy initialisation (allocator, kernels, imports)
        plain(limit=5)
        rnnexp_epoch(config(False, limit=5), datamodule, device)
        results = {name: [] for name in VARIANTS}
        for r in range(repeats):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for name in order:
                gc.collect()  # each variant starts clean of the garbage the previous one left
                results[name].append(measure[name]())
    plain_wall = [run["wall_s"] for run in results["plain"]]
    plain_cpu = [run["cpu_s"] for run in results["plain"]]
    rows = []
    for name in VARIANTS:
        wall = [run["wall_s"] for run in results[name]]
        cpu = [run["cpu_s"] for run in results[name]]
        steps_done = results[name][0]["steps"]
        rows.append({"variant": name, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
                     "steps": steps_done, "ms_per_step": 1e3 * statistics.median(wall) / steps_done,
                     # each repeat's variants ran back to back, under the same load: the ratio of a
                     # pair drifts less than either time, so the median of the pairs' ratios is reported
                     "ratio": statistics.median(w / p for w, p in zip(wall, plain_wall)),
                     "cpu_ratio": statistics.median(c / p for c, p in zip(cpu, plain_cpu)),
                     "ratio_of_medians": statistics.median(wall) / statistics.median(plain_wall),
                     "ratio_of_minima": min(wall) / min(plain_wall),
                     "epoch_s": statistics.median(wall) / steps_done * len(datamodule.train_dataloader()),
                     "all_wall_s": wall})
    checks = [{"name": f"epoch: {name} / plain", "value": row["ratio"], "target": TARGETS[name],
               "detail": f"{row['ms_per_step']:.2f} vs {rows[0]['ms_per_step']:.2f} ms/step; ratio of minima "
                         f"{row['ratio_of_minima']:.3f}, CPU time {row['cpu_ratio']:.3f}"}
              for name, row in zip(VARIANTS, rows) if name in TARGETS]
    setup = {**common, "source_used": datamodule.source_used, "repeats": repeats,
             "train_samples": len(train_split), "threads_used": torch.get_num_threads()}
    return {"setup": setup, "rows": rows, "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    steps = s["steps"] or "all"
    table = Table(title=f"training epoch: {s['dataset']} rows ({s['source_used']}), {s['cell'].upper()}-"
                        f"{s['hidden_size']}, batch {s['batch_size']}, {steps} steps, {s['threads_used']} threads, "
                        f"{s['device']}, {s['precision']} (medians of {s['repeats']})")
    for title in ("variant", "s", "CPU s", "ms/step", "s/epoch (est.)", "x plain", "x plain (minima)",
                  "x plain (CPU)"):
        table.add_column(title, justify="left" if title == "variant" else "right")
    for row in result["rows"]:
        table.add_row(row["variant"], f"{row['wall_s']:.2f}", f"{row['cpu_s']:.2f}", f"{row['ms_per_step']:.2f}",
                      f"{row['epoch_s']:.1f}", f"{row['ratio']:.3f}", f"{row['ratio_of_minima']:.3f}",
                      f"{row['cpu_ratio']:.3f}")
    (console or Console(highlight=False)).print(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=100, help="batches per timed epoch (0: the whole epoch)")
    parser.add_argument("--repeats", type=int, default=9, help="timings per variant (medians are reported)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.epoch", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", default="auto")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", default="32-true", choices=("32-true", "16-mixed", "bf16-mixed"))
    args = parser.parse_args(argv)
    result = measure_epoch(args.cell, args.hidden_size, args.batch_size, args.steps, args.threads, args.repeats,
                           source=args.source, device=args.device, precision=args.precision)
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
