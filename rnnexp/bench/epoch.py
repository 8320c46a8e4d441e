"""rnnexp's training epoch against the plain PyTorch loop, in one process, step by step.

    python -m rnnexp.bench.epoch                      # Fashion-MNIST rows, LSTM-128, batch 128, 2 threads
    python -m rnnexp.bench.epoch --steps 0 --repeats 5   # whole epochs (422 batches)

The rnnexp side is a Trainer built by `rnnexp.build` from the real config (conf/train.yaml with its
default callbacks, TensorBoard logger and checkpoints), exactly as `rnnexp.training.train` builds it;
the plain side (`rnnexp.bench.plain_loop`) trains its own copy of the same model (same seed, same
initial weights, same optimizer config) on the same in-memory tensors, batch size and threads.

The two are interleaved step by step: after each rnnexp training step, a callback runs one step of
the plain loop and times it apart. The rnnexp time is the epoch's wall time (from
`on_train_epoch_start` to the end of its last batch) minus the plain steps inside it, so every
per-step cost of rnnexp (data fetch, logging, metrics, callbacks, the progress bar, periodic
checkpoints) is in it, and Trainer set-up and the validation pass after the last batch are not
(the plain loop has neither). A shared machine's speed drifts by tens of percent over seconds;
steps a few milliseconds apart see the same machine, so the ratio of the two sums is steady where
timing whole runs in turns is not. Each repeat is a fresh Trainer and a fresh plain model; the
median of the repeats' ratios is reported, with their range.

Interleaving must not favour either side. The plain loop shuffles with the same seed but starts
half an epoch into the order, so it never reads rows that rnnexp's step has just pulled into the
caches; only wall clocks are read around its steps (a CPU-time clock is a system call, charged to
whichever side it falls in). The "plain, 2nd copy" row checks the harness itself: a second plain
loop interleaved with the first the same way; its ratio is the bias and noise of the method (1
when there is none).
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

import pytorch_lightning as pl

from rnnexp.bench.config import compose_run_config, data_overrides, quiet_lightning
from rnnexp.bench.plain_loop import synchronize

VARIANTS = ("plain", "plain, 2nd copy", "rnnexp, bar off", "rnnexp, bar on")
RNNEXP_VARIANTS = VARIANTS[2:]
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


class InterleavedPlainSteps(pl.Callback):
    """One plain-loop step after each rnnexp training step, timed apart from the epoch."""

    def __init__(self, plain, device: str = "cpu"):
        self.plain, self.device, self.result = plain, device, None

    def on_train_epoch_start(self, trainer, pl_module):
        synchronize(self.device)
        self.plain_wall = 0.0
        self.wall = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.result is not None:
            return
        synchronize(self.device)
        start = time.perf_counter()
        self.plain.step()
        synchronize(self.device)
        end = time.perf_counter()
        self.plain_wall += end - start
        if batch_idx + 1 == trainer.num_training_batches:
            self.result = {"rnnexp_wall_s": end - self.wall - self.plain_wall, "plain_wall_s": self.plain_wall,
                           "steps": batch_idx + 1}


def interleaved_plain_pair(in_rnnexp_place, plain, steps: int, device: str = "cpu") -> dict:
    """The harness check: `steps` steps of two PlainLoops, alternating in the order rnnexp's step
    and the plain step alternate, each timed apart."""
    walls = [0.0, 0.0]
    for _ in range(steps):
        for i, loop in enumerate((in_rnnexp_place, plain)):
            synchronize(device)
            start = time.perf_counter()
            loop.step()
            synchronize(device)
            walls[i] += time.perf_counter() - start
    return {"rnnexp_wall_s": walls[0], "plain_wall_s": walls[1], "steps": steps}


def interleaved_epoch(cfg, datamodule, plain, device: str = "cpu") -> dict:
    """One epoch through a Trainer built as `rnnexp.training.train` builds it (data module shared),
    with a step of `plain` (a PlainLoop) after each of its steps."""
    from rnnexp.build import build_callbacks, build_loggers, build_module, build_trainer, configure_torch, validate

    validate(cfg)
    configure_torch(cfg)  # threads and denormal flushing, which the plain side then shares
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    module = build_module(cfg, datamodule.task)
    interleave = InterleavedPlainSteps(plain, device)
    callbacks = [*build_callbacks(cfg), interleave]
    trainer = build_trainer(cfg, callbacks, build_loggers(cfg), manual_optimization=not module.automatic_optimization)
    with contextlib.redirect_stdout(io.StringIO()):  # the model summary table, once per run: noise here
        trainer.fit(module, datamodule=datamodule)
    if interleave.result is None:
        raise RuntimeError("the training epoch did not finish its batches")
    return interleave.result


def measure_epoch(cell: str = "lstm", hidden_size: int = 128, batch_size: int = 128, steps: int = 100,
                  threads: int = 2, repeats: int = 9, seed: int = 0, dataset: str = "fashion_mnist",
                  source: str = "auto", device: str = "cpu", precision: str = "32-true",
                  overrides: tuple[str, ...] = ()) -> dict:
    """Seconds per epoch (or per `steps` batches) of the plain loop and of rnnexp with the progress
    bar off and on, and the ratios rnnexp / plain: per repeat the ratio of the interleaved sums
    (wall time), the median of the repeats reported with their range, and the same for a second
    plain loop in rnnexp's place (the harness check). `overrides`
    go on the command line of both sides' config (e.g. `~logger.tensorboard` to time without it)."""
    import torch

    from rnnexp.bench.plain_loop import PlainLoop
    from rnnexp.build import build_datamodule, build_module

    quiet_lightning()
    if threads > 0:
        torch.set_num_threads(threads)
    common = {"cell": cell, "hidden_size": hidden_size, "batch_size": batch_size, "steps": steps, "threads": threads,
              "seed": seed, "dataset": dataset, "source": source, "device": device, "precision": precision}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-epoch-") as scratch:
        runs = iter(range(10_000))

        def config(progress_bar: bool, limit: int | None = None):
            command = epoch_overrides(**{**common, "steps": limit if limit is not None else steps},
                                      progress_bar=progress_bar)
            return compose_run_config([*command, *overrides], Path(scratch) / f"run{next(runs)}")

        datamodule = build_datamodule(config(False)).prepare()
        train_split = datamodule.splits[0]

        batches_per_epoch = len(datamodule.train_dataloader())

        def plain_loop(start_batch: int = batches_per_epoch // 2) -> PlainLoop:
            pl.seed_everything(seed, verbose=False)
            module = build_module(config(False), datamodule.task)  # the same initial weights as rnnexp's
            return PlainLoop(module, train_split.inputs, train_split.targets, batch_size, seed=seed, device=device,
                             precision=precision, start_batch=start_batch)

        def run(variant: str) -> dict:
            if variant == "plain, 2nd copy":  # the same pairing, with a plain loop in rnnexp's place
                return interleaved_plain_pair(plain_loop(0), plain_loop(), steps or batches_per_epoch, device)
            return interleaved_epoch(config(variant.endswith("on")), datamodule, plain_loop(), device)

        # warm-up: first calls pay for lazy initialisation (allocator, kernels, imports)
        interleaved_epoch(config(False, limit=5), datamodule, plain_loop(), device)
        results = {name: [] for name in VARIANTS[1:]}
        for r in range(repeats):
            for name in (VARIANTS[1:] if r % 2 == 0 else VARIANTS[:0:-1]):
                gc.collect()  # each run starts clean of the garbage the previous one left
                results[name].append(run(name))
    plain_runs = [result for name in RNNEXP_VARIANTS for result in results[name]]
    steps_done = plain_runs[0]["steps"]

    def row(variant: str, wall: list[float], ratios=None) -> dict:
        entry = {"variant": variant, "wall_s": statistics.median(wall), "steps": steps_done,
                 "ms_per_step": 1e3 * statistics.median(wall) / steps_done,
                 "epoch_s": statistics.median(wall) / steps_done * batches_per_epoch, "all_wall_s": wall}
        if ratios is not None:
            entry.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                         all_ratios=ratios)
        return entry

    rows = [row("plain", [r["plain_wall_s"] for r in plain_runs])]
    for name, runs_of in results.items():
        rows.append(row(name, [r["rnnexp_wall_s"] for r in runs_of],
                        [r["rnnexp_wall_s"] / r["plain_wall_s"] for r in runs_of]))
    harness = next(row for row in rows if row["variant"] == "plain, 2nd copy")
    checks = [{"name": f"epoch: {row['variant']} / plain", "value": row["ratio"], "target": TARGETS[row["variant"]],
               "detail": f"{row['ms_per_step']:.2f} vs {rows[0]['ms_per_step']:.2f} ms/step; repeats "
                         f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f}; harness check (plain / plain) "
                         f"{harness['ratio']:.3f}"}
              for row in rows if row["variant"] in TARGETS]
    setup = {**common, "overrides": list(overrides), "source_used": datamodule.source_used, "repeats": repeats,
             "train_samples": len(train_split), "threads_used": torch.get_num_threads()}
    return {"setup": setup, "rows": rows, "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    steps = s["steps"] or "all"
    table = Table(title=f"training epoch: {s['dataset']} rows ({s['source_used']}), {s['cell'].upper()}-"
                        f"{s['hidden_size']}, batch {s['batch_size']}, {steps} steps, {s['threads_used']} threads, "
                        f"{s['device']}, {s['precision']} (interleaved, medians of {s['repeats']})")
    for title in ("variant", "s", "ms/step", "s/epoch (est.)", "x plain", "repeats' range"):
        table.add_column(title, justify="left" if title == "variant" else "right")
    for row in result["rows"]:
        ratio = row.get("ratio")
        table.add_row(row["variant"], f"{row['wall_s']:.2f}", f"{row['ms_per_step']:.2f}",
                      f"{row['epoch_s']:.1f}", "1" if ratio is None else f"{ratio:.3f}",
                      "" if ratio is None else f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f}")
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
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the run, repeatable: e.g. --override='~logger.tensorboard' "
                             "--override='~callbacks.lr_monitor' times the epoch without the logger")
    args = parser.parse_args(argv)
    result = measure_epoch(args.cell, args.hidden_size, args.batch_size, args.steps, args.threads, args.repeats,
                           source=args.source, device=args.device, precision=args.precision,
                           overrides=tuple(args.override))
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
