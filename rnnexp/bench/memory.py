"""Peak memory of one training step: full BPTT against truncated BPTT on pixel-MNIST sequences.

    python -m rnnexp.bench.memory                 # T=784, LSTM-128, batch 128, k1 = k2 = 28
    python -m rnnexp.bench.memory --k 56 --cell gru --max-ratio 0.25

What is measured: on CPU, how far the process's resident set size (RSS) rises above its level at
the start of one training batch, at its highest point during that batch. Linux keeps the peak
(VmHWM in /proc/self/status); writing 5 to /proc/self/clear_refs resets it to the current RSS, so
a callback resets it as the batch starts and reads it as the batch ends. The difference is all the
step allocated and held at one time: activations kept for the backward pass, gradients, the
optimizer's state. On CUDA the same is read from torch's allocator (max_memory_allocated).

Each strategy runs in a fresh subprocess, and its first batch is measured: a second batch would
reuse memory that the allocator kept from the first, and the growth would read as almost nothing.
The model is the real one (`build_module` on `data=seq_mnist data.order=pixel`); the inputs are
random pixels of the same shape, since the values do not change what is stored. The first step's
time is printed too, but it includes one-time set-up: this is not a speed benchmark.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

STRATEGIES = ("full", "truncated")


def measure_memory(seq_len: int = 784, hidden_size: int = 128, batch_size: int = 128, k: int = 28,
                   cell: str = "lstm", threads: int = 2, device: str = "cpu") -> dict:
    """Run one training step per strategy, each in a fresh process; return their peak growth (MB),
    step times, and `ratio` = truncated / full."""
    from rnnexp.bench.startup import json_from_child

    runs = {}
    for strategy in STRATEGIES:
        command = [sys.executable, "-m", "rnnexp.bench.memory", "--child", strategy, "--seq-len", str(seq_len),
                   "--hidden-size", str(hidden_size), "--batch-size", str(batch_size), "--k", str(k),
                   "--cell", cell, "--threads", str(threads), "--device", device]
        runs[strategy] = json_from_child(command, strategy)
    return {"seq_len": seq_len, "hidden_size": hidden_size, "batch_size": batch_size, "k": k, "cell": cell,
            "device": device, "runs": runs,
            "ratio": runs["truncated"]["peak_growth_mb"] / runs["full"]["peak_growth_mb"]}


# -- inside the child process -----------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}: the CPU measurement needs Linux")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _probe_class():
    import pytorch_lightning as pl
    import torch

    class PeakMemoryProbe(pl.Callback):
        """Peak memory growth (MB) and wall time of the first training batch."""

        def __init__(self, cuda: bool):
            self.cuda, self.result = cuda, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            gc.collect()
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.before = torch.cuda.memory_allocated()
            else:
                self.before = _status_kb("VmRSS") * 1024
                _reset_peak_rss()
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.result is not None:
                return
            if self.cuda:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
            else:
                peak = _status_kb("VmHWM") * 1024
            self.result = {"peak_growth_mb": (peak - self.before) / 2**20,
                           "step_s": time.perf_counter() - self.started,
                           "optimizer_steps": trainer.global_step}

    return PeakMemoryProbe


def _child(args) -> dict:
    import pytorch_lightning as pl
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import rnnexp.resolvers  # noqa: F401  (registers ${unique_dir:...})
    from rnnexp.build import build_module, configure_torch
    from rnnexp.data.loaders import InMemorySequences, batch_loader
    from rnnexp.data.task import TaskSpec
    from rnnexp.train import CONFIG_DIR

    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)
    overrides = ["data=seq_mnist", "data.order=pixel", f"cell={args.cell}", f"model.hidden_size={args.hidden_size}",
                 f"bptt={args.child}"]
    if args.child == "truncated":
        overrides += [f"bptt.k1={args.k}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):  # nothing is written; the run config only has to resolve
        cfg.hydra.runtime.output_dir = tempfile.gettempdir()
    HydraConfig.instance().set_config(cfg)
    configure_torch(cfg)  # denormal flushing as a run has it (threads=0 in cfg: the ones set above)

    task = TaskSpec(kind="classify_last", input_size=1, output_size=10, seq_len=args.seq_len, baseline=0.1)
    module = build_module(cfg, task)
    inputs = torch.randn(args.batch_size, args.seq_len, 1)
    labels = torch.randint(0, 10, (args.batch_size,))
    loader = batch_loader(InMemorySequences(inputs, labels), args.batch_size, shuffle=False)
    cuda = args.device == "cuda"
    probe = _probe_class()(cuda)
    trainer = pl.Trainer(accelerator="gpu" if cuda else "cpu", devices=1, max_epochs=1, limit_train_batches=1,
                         limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, train_dataloaders=loader)
    return {"strategy": args.child, **probe.result}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=784)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--k", type=int, default=28, help="truncation: bptt.k1 = bptt.k2")
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--max-ratio", type=float, default=0.0,
                        help="exit 1 when truncated / full peak growth exceeds this (0: never)")
    parser.add_argument("--child", choices=STRATEGIES, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        print(json.dumps(_child(args)))
        return 0
    result = measure_memory(args.seq_len, args.hidden_size, args.batch_size, args.k, args.cell, args.threads,
                            args.device)
    what = "peak RSS growth" if args.device == "cpu" else "peak CUDA allocation growth"
    print(f"one training step, {args.cell.upper()}-{args.hidden_size}, T={args.seq_len}, batch {args.batch_size}, "
          f"{args.device}, {what}:")
    for strategy, run in result["runs"].items():
        label = "full BPTT" if strategy == "full" else f"truncated k1=k2={args.k}"
        print(f"  {label:<24} {run['peak_growth_mb']:8.1f} MB   first step {run['step_s']:6.2f} s   "
              f"{run['optimizer_steps']} optimizer step(s)")
    print(f"  ratio truncated / full: {result['ratio']:.3f}")
    if args.max_ratio and result["ratio"] > args.max_ratio:
        print(f"FAIL: ratio {result['ratio']:.3f} > {args.max_ratio}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
