"""Full against truncated BPTT on pixel sequences (T = 784): time per training step, and the peak
memory growth that `rnnexp.bench.memory` measures.

    python -m rnnexp.bench.truncation --steps 3

The step time is the real module (`build_module` with bptt=full or bptt=truncated, k1 = k2 = k)
inside a bare Trainer on random pixel batches: after one warm-up batch, the mean over `steps`
batches. Sequence MNIST has one target per sequence, so truncated BPTT runs T / k windows (all but
the last without a graph) and makes one update per batch, as full BPTT does. The epoch figure is
that time times the batches of a 60k-sample epoch (extrapolated). Memory comes from
`rnnexp.bench.memory.measure_memory`, one fresh process per strategy.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time

EPOCH_SAMPLES = 60_000


def time_bptt_step(strategy: str, seq_len: int = 784, hidden_size: int = 128, batch_size: int = 128, k: int = 28,
                   cell: str = "lstm", steps: int = 2, threads: int = 2, device: str = "cpu") -> dict:
    import pytorch_lightning as pl
    import torch

    from rnnexp.bench.config import compose_run_config, quiet_lightning
    from rnnexp.bench.plain_loop import synchronize
    from rnnexp.build import build_module, configure_torch
    from rnnexp.data.loaders import InMemorySequences, batch_loader
    from rnnexp.data.task import TaskSpec

    quiet_lightning()
    if threads > 0:
        torch.set_num_threads(threads)
    overrides = ["data=seq_mnist", "data.order=pixel", f"cell={cell}", f"model.hidden_size={hidden_size}",
                 f"bptt={strategy}"] + ([f"bptt.k1={k}"] if strategy == "truncated" else [])
    cfg = compose_run_config(overrides, tempfile.gettempdir())
    configure_torch(cfg)  # denormal flushing as a run has it (threads=0 in cfg: the ones set above)
    pl.seed_everything(0, verbose=False)
    task = TaskSpec(kind="classify_last", input_size=1, output_size=10, seq_len=seq_len, baseline=0.1)
    module = build_module(cfg, task)
    batches = steps + 1
    data = InMemorySequences(torch.randn(batch_size * batches, seq_len, 1), torch.randint(0, 10, (batch_size * batches,)))
    ends: list[float] = []

    class BatchEnds(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            synchronize(device)
            ends.append(time.perf_counter())

    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1,
                         limit_train_batches=batches, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[BatchEnds()])
    trainer.fit(module, train_dataloaders=batch_loader(data, batch_size, shuffle=False))
    step_s = statistics.fmean(b - a for a, b in itertools.pairwise(ends))
    return {"strategy": strategy, "step_s": step_s, "epoch_s": step_s * math.ceil(EPOCH_SAMPLES / batch_size),
            "optimizer_steps_per_batch": trainer.global_step / batches}


def measure_truncation(seq_len: int = 784, hidden_size: int = 128, batch_size: int = 128, k: int = 28,
                       cell: str = "lstm", steps: int = 2, threads: int = 2, device: str = "cpu") -> dict:
    from rnnexp.bench.memory import measure_memory

    memory = measure_memory(seq_len, hidden_size, batch_size, k, cell, threads, device)
    rows = []
    for strategy in ("full", "truncated"):
        timing = time_bptt_step(strategy, seq_len, hidden_size, batch_size, k, cell, steps, threads, device)
        rows.append({**timing, "peak_growth_mb": memory["runs"][strategy]["peak_growth_mb"]})
    time_ratio = rows[1]["step_s"] / rows[0]["step_s"]
    checks = [{"name": f"BPTT: truncated (k={k}) / full peak memory growth, T={seq_len}", "value": memory["ratio"],
               "target": 0.25, "owner": "truncation issue (rnnexp.bench.memory)",
               "detail": f"{rows[1]['peak_growth_mb']:.0f} vs {rows[0]['peak_growth_mb']:.0f} MB; "
                         f"step time ratio {time_ratio:.2f}"}]
    setup = {"seq_len": seq_len, "hidden_size": hidden_size, "batch_size": batch_size, "k": k, "cell": cell,
             "steps": steps, "threads": threads, "device": device}
    return {"setup": setup, "rows": rows, "time_ratio": time_ratio, "memory_ratio": memory["ratio"], "checks": checks}


def print_result(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["setup"]
    table = Table(title=f"full vs truncated BPTT: {s['cell'].upper()}-{s['hidden_size']}, T={s['seq_len']}, batch "
                        f"{s['batch_size']}, k1=k2={s['k']}, {s['threads']} threads, {s['device']} (time: mean of "
                        f"{s['steps']} steps; s/epoch extrapolated to 60k)")
    for title in ("BPTT", "s/step", "s/epoch (est.)", "updates/batch", "peak growth MB"):
        table.add_column(title, justify="left" if title == "BPTT" else "right")
    for row in result["rows"]:
        table.add_row(row["strategy"], f"{row['step_s']:.3f}", f"{row['epoch_s']:.0f}",
                      f"{row['optimizer_steps_per_batch']:.0f}", f"{row['peak_growth_mb']:.1f}")
    (console or Console(highlight=False)).print(table)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.truncation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=784)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--k", type=int, default=28)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print_result(measure_truncation(args.seq_len, args.hidden_size, args.batch_size, args.k, steps=args.steps,
                                    threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
