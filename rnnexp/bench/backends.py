"""Native vs explicit backend: training-step time in one process, with the ratio explicit / native.

    python -m rnnexp.bench.backends                      row-by-row MNIST shape: LSTM-128, T=28, batch 128
    python -m rnnexp.bench.backends --cells lstm,gru --no-compile --steps 10

A training step is forward + backward + Adam step of encoder and linear head on random data of
the given shape (reading the data is the same for both backends, so it is left out: the ratio
of whole epochs is, if anything, closer to 1). All variants start from the same weights and are
timed in turns, repeat after repeat, so that load from other processes, which drifts, falls on
each alike; the medians are reported. `epoch_s` is the median step time x steps per 60k-sample
epoch. On a shared machine the numbers are noisy: compare ratios from one run, not across runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from rnnexp.nn.recurrent import CellSpec, RecurrentEncoder, readout
from rnnexp.nn.weights import copy_native_to_explicit

SPECS = {"rnn": CellSpec("elman", "tanh"), "irnn": CellSpec("elman", "relu", recurrent_init="identity"),
         "lstm": CellSpec("lstm", forget_bias=1.0), "gru": CellSpec("gru")}
EPOCH_SAMPLES = 60_000


class _Classifier(nn.Module):
    def __init__(self, encoder: RecurrentEncoder, classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.output_size, classes)

    def forward(self, x):
        outputs, state = self.encoder(x)
        return self.head(readout(outputs, state, "final_state", self.encoder.num_layers, False))


def _variants(cell: str, hidden_size: int, input_size: int, compile: bool) -> dict[str, _Classifier]:
    spec = SPECS[cell]
    native = _Classifier(RecurrentEncoder(spec, input_size, hidden_size, backend="native"), 10)
    variants = {"native": native}
    names = ["explicit", "explicit+compile"] if compile else ["explicit"]
    for name in names:
        twin = _Classifier(RecurrentEncoder(spec, input_size, hidden_size, backend="explicit"), 10)
        copy_native_to_explicit(native.encoder, twin.encoder)
        twin.head.load_state_dict(native.head.state_dict())
        if name.endswith("compile"):
            twin.encoder.core.compile()  # what model.compile=true does (rnnexp.build)
        variants[name] = twin
    return variants


def _trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def measure_backends(cells=("lstm",), hidden_size: int = 128, seq_len: int = 28, input_size: int = 28,
                     batch_size: int = 128, steps: int = 20, repeats: int = 5, compile: bool = True,
                     warmup: int = 3, seed: int = 0) -> list[dict]:
    """One row per cell and variant: median seconds per training step (wall and CPU), the epoch
    estimate, the ratio to native, and the first (warm-up) steps' time, which holds the compile."""
    rows = []
    for cell in cells:
        torch.manual_seed(seed)
        x = torch.randn(batch_size, seq_len, input_size)
        y = torch.randint(0, 10, (batch_size,))
        steppers = {name: _trainer(model, x, y) for name, model in
                    _variants(cell, hidden_size, input_size, compile).items()}
        warmup_s = {}
        for name, step in steppers.items():
            started = time.perf_counter()
            for _ in range(warmup):
                step()
            warmup_s[name] = time.perf_counter() - started
        wall = {name: [] for name in steppers}
        cpu = {name: [] for name in steppers}
        for _ in range(repeats):
            for name, step in steppers.items():  # in turns: drifting load falls on every variant
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(steps):
                    step()
                wall[name].append((time.perf_counter() - w0) / steps)
                cpu[name].append((time.process_time() - c0) / steps)
        native_wall, native_cpu = statistics.median(wall["native"]), statistics.median(cpu["native"])
        for name in steppers:
            step_s = statistics.median(wall[name])
            rows.append({
                "cell": cell, "backend": name, "step_ms": 1e3 * step_s, "step_ms_min": 1e3 * min(wall[name]),
                "cpu_step_ms": 1e3 * statistics.median(cpu[name]),
                "epoch_s": step_s * -(-EPOCH_SAMPLES // batch_size),
                "ratio": step_s / native_wall, "cpu_ratio": statistics.median(cpu[name]) / native_cpu,
                "warmup_s": warmup_s[name], "hidden_size": hidden_size, "seq_len": seq_len,
                "batch_size": batch_size, "threads": torch.get_num_threads(),
            })
    return rows


def print_rows(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    first = rows[0]
    table = Table(title=f"training step, H={first['hidden_size']} T={first['seq_len']} B={first['batch_size']}, "
                        f"{first['threads']} threads (medians)")
    columns = [("cell", "cell", "{}"), ("backend", "backend", "{}"), ("ms/step", "step_ms", "{:.1f}"),
               ("min", "step_ms_min", "{:.1f}"), ("CPU ms/step", "cpu_step_ms", "{:.1f}"),
               ("s/epoch (60k)", "epoch_s", "{:.1f}"), ("x native", "ratio", "{:.2f}"),
               ("x native (CPU)", "cpu_ratio", "{:.2f}"), ("warm-up s", "warmup_s", "{:.1f}")]
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title in ("cell", "backend") else "right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) for _, key, fmt in columns))
    Console(highlight=False, width=140).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnexp.bench.backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="lstm", help="comma list of rnn, irnn, lstm, gru")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=28)
    parser.add_argument("--input-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings per variant (medians are reported)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant (~25 s+ to compile)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in SPECS]
    if unknown:
        parser.error(f"--cells {','.join(unknown)}: allowed values are {', '.join(SPECS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = measure_backends(cells, args.hidden_size, args.seq_len, args.input_size, args.batch_size,
                            args.steps, args.repeats, compile=not args.no_compile)
    print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
