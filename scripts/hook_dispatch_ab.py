"""A/B of rnnexp/lit/hook_dispatch.py: the interleaved epoch benchmark (rnnexp.bench.epoch, progress
bar off) with Lightning's own hook dispatch and with rnnexp's, alternated repeat by repeat in one
process, so that the machine's drift falls on both alike. Quoted in README "What makes the training
step cheap".

    .venv/bin/python scripts/hook_dispatch_ab.py --steps 200 --repeats 16
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import pytorch_lightning as pl
import torch

from rnnexp.bench.config import compose_run_config, quiet_lightning
from rnnexp.bench.epoch import epoch_overrides, interleaved_epoch
from rnnexp.bench.plain_loop import PlainLoop
from rnnexp.build import build_datamodule, build_module
from rnnexp.lit import hook_dispatch

VARIANTS = ("Lightning's dispatch", "rnnexp's dispatch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=16)
    args = parser.parse_args()
    quiet_lightning()
    torch.set_num_threads(2)
    ratios = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="rnnexp-hook-ab-") as scratch:
        runs = iter(range(10_000))

        def config(steps: int):
            return compose_run_config(epoch_overrides(steps=steps), Path(scratch) / f"run{next(runs)}")

        datamodule = build_datamodule(config(args.steps)).prepare()
        half_epoch = len(datamodule.train_dataloader()) // 2

        def plain_loop() -> PlainLoop:
            pl.seed_everything(0, verbose=False)
            split = datamodule.splits[0]
            return PlainLoop(build_module(config(args.steps), datamodule.task), split.inputs, split.targets,
                             datamodule.batch_size, start_batch=half_epoch)

        interleaved_epoch(config(5), datamodule, plain_loop())  # warm-up
        for r in range(args.repeats):
            for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                # build_trainer installs rnnexp's dispatch: for Lightning's, it uninstalls instead
                with (mock.patch.object(hook_dispatch, "install", hook_dispatch.uninstall)
                      if variant == VARIANTS[0] else contextlib.nullcontext()):
                    gc.collect()
                    result = interleaved_epoch(config(args.steps), datamodule, plain_loop())
                ratios[variant].append(result["rnnexp_wall_s"] / result["plain_wall_s"])
            print(r, {variant: f"{values[-1]:.3f}" for variant, values in ratios.items()}, flush=True)
    for variant, values in ratios.items():
        print(f"{variant}: rnnexp / plain median {statistics.median(values):.4f} "
              f"(mean {statistics.mean(values):.4f}, {min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
