"""`rnnexp-bench`: what rnnexp costs against the loop a researcher would write, measured in one run.

    rnnexp-bench                                  # every section, small defaults (a few minutes on 2 cores)
    rnnexp-bench --only epoch,startup --json      # some sections; JSON on stdout instead of tables
    rnnexp-bench --steps 0 --repeats 5            # whole training epochs
    rnnexp-bench --device cuda --precision bf16-mixed --only epoch,scaling

Sections (each also runs alone as `python -m rnnexp.bench.<module>`):
    epoch      rnnexp's training epoch / a plain PyTorch loop, progress bar off and on,  (bench.epoch)
               interleaved step by step; a 2nd plain loop in rnnexp's place checks the harness
    backends   native vs explicit backend, eager and compiled, per cell                (bench.backends)
    bptt       full vs truncated BPTT at T=784: step time and peak memory growth       (bench.truncation)
    denormals  a T=784 training step with float32 denormals kept vs flushed (CPU)      (bench.denormals)
    startup    rnnexp-train --cfg job, --help, time to the first training step         (bench.startup)
    sweep      two jobs through the joblib launcher vs one after the other             (bench.sweep_throughput)
    scaling    time and memory against sequence length, hidden size, batch size; PNG   (bench.scaling)
Ratios are taken inside one run, variants measured in turns, medians of repeats: load from other
processes, which drifts, falls on both sides of a ratio alike. The machine and its load average
before and after are printed with the results; compare ratios, not absolute times, across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

SECTIONS = ("epoch", "backends", "bptt", "denormals", "startup", "sweep", "scaling")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnexp-bench", description=__doc__.split("\n\n")[0],
                                     epilog="Sections: " + ", ".join(SECTIONS),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout instead of tables")
    parser.add_argument("--out-dir", default="outputs/bench", help="bench.json and the scaling plot go here")
    model = parser.add_argument_group("model and data (epoch, bptt, sweep)")
    model.add_argument("--cell", default="lstm", help="cell of the epoch, bptt and sweep sections")
    model.add_argument("--hidden-size", type=int, default=128)
    model.add_argument("--batch-size", type=int, default=128)
    model.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist"))
    model.add_argument("--source", default="auto", help="data.source (bundled: the 5k MNIST subset, mnist only)")
    model.add_argument("--threads", type=int, default=2, help="torch threads in the measuring process")
    model.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    model.add_argument("--precision", default="32-true", choices=("32-true", "16-mixed", "bf16-mixed"),
                       help="trainer.precision of the epoch section (and autocast in the plain loop, scaling)")
    size = parser.add_argument_group("how much to measure")
    size.add_argument("--steps", type=int, default=100, help="epoch: training batches per timing (0: whole epoch)")
    size.add_argument("--repeats", type=int, default=9, help="epoch: timings per variant (medians are reported)")
    size.add_argument("--cells", default="lstm", help="backends: cells to compare, e.g. lstm,gru")
    size.add_argument("--backend-steps", type=int, default=10, help="backends: training steps per timing")
    size.add_argument("--backend-repeats", type=int, default=3)
    size.add_argument("--no-compile", action="store_true", help="backends: skip the compiled variant (slow first compile)")
    size.add_argument("--seq-len", type=int, default=784, help="bptt: sequence length (pixel sequences)")
    size.add_argument("--k", type=int, default=28, help="bptt: truncation length k1 = k2")
    size.add_argument("--bptt-steps", type=int, default=2, help="bptt: timed batches per strategy")
    size.add_argument("--denormal-repeats", type=int, default=3,
                      help="denormals: timed steps per setting (at --seq-len, on the CPU)")
    size.add_argument("--startup-repeats", type=int, default=3)
    size.add_argument("--sweep-steps", type=int, default=1500, help="sweep: training steps per job")
    size.add_argument("--sweep-repeats", type=int, default=1)
    size.add_argument("--sweep-modes", default="sequential,sequential_1_thread,joblib",
                      help="sweep: sequential, sequential_1_thread (OMP_NUM_THREADS=1), joblib")
    size.add_argument("--scaling-steps", type=int, default=2, help="scaling: timed steps per point")
    size.add_argument("--scaling-cells", default="lstm,gru")
    size.add_argument("--scaling-backends", default="native,explicit",
                      help="scaling: native, explicit, explicit+compile")
    size.add_argument("--scaling-seq-lens", default="28,112,784")
    size.add_argument("--scaling-hidden-sizes", default="64,128,256,512")
    size.add_argument("--scaling-batch-sizes", default="32,128,512")
    return parser


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# -- the sections ---------------------------------------------------------------------------------
def run_epoch(args) -> dict:
    from rnnexp.bench.epoch import measure_epoch

    return measure_epoch(args.cell, args.hidden_size, args.batch_size, args.steps, args.threads, args.repeats,
                         dataset=args.dataset, source=args.source, device=args.device, precision=args.precision)


def run_backends(args) -> dict:
    import torch

    from rnnexp.bench.backends import measure_backends

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = measure_backends(tuple(_names(args.cells)), hidden_size=args.hidden_size, batch_size=args.batch_size,
                            steps=args.backend_steps, repeats=args.backend_repeats, compile=not args.no_compile)
    checks = []
    for row in rows:
        if row["backend"] == "native":
            continue
        target = 1.3 if row["backend"] == "explicit+compile" and row["cell"] == "lstm" else None
        checks.append({"name": f"backends: {row['backend']} / native, {row['cell'].upper()}-{row['hidden_size']} "
                               f"(CPU)", "value": row["ratio"], "target": target,
                       "owner": "explicit-cells issue (rnnexp.bench.backends)" if target else None,
                       "detail": f"{row['step_ms']:.1f} ms/step; CPU-time ratio {row['cpu_ratio']:.2f}; "
                                 f"warm-up (3 steps, with the compile) {row['warmup_s']:.1f} s"})
    return {"setup": {"device": "cpu", "note": "rnnexp.bench.backends measures on the CPU"}, "rows": rows,
            "checks": checks}


def run_bptt(args) -> dict:
    from rnnexp.bench.truncation import measure_truncation

    return measure_truncation(args.seq_len, args.hidden_size, args.batch_size, args.k, args.cell, args.bptt_steps,
                              args.threads, args.device)


def run_denormals(args) -> dict:
    from rnnexp.bench.denormals import measure_denormals

    return measure_denormals(args.seq_len, args.hidden_size, args.batch_size, args.cell, args.denormal_repeats,
                             args.threads)


def run_startup(args) -> dict:
    from rnnexp.bench.startup import measure_startup

    return measure_startup(args.startup_repeats, args.dataset, args.source, args.threads, args.device)


def run_sweep(args) -> dict:
    from rnnexp.bench.sweep_throughput import MODE_FLAGS, measure_sweep

    modes = [MODE_FLAGS[mode] for mode in _names(args.sweep_modes)]
    return measure_sweep(args.sweep_steps, args.sweep_repeats, args.cell, args.hidden_size, args.dataset, args.source,
                         args.device, modes=modes)


def run_scaling(args) -> dict:
    from rnnexp.bench.scaling import measure_scaling

    return measure_scaling(_names(args.scaling_cells), _names(args.scaling_backends), args.scaling_steps, args.threads,
                           _ints(args.scaling_seq_lens), _ints(args.scaling_hidden_sizes),
                           _ints(args.scaling_batch_sizes), args.device, args.precision, out_dir=args.out_dir,
                           base={"seq_len": 28, "hidden_size": args.hidden_size, "batch_size": args.batch_size})


RUNNERS = {"epoch": run_epoch, "backends": run_backends, "bptt": run_bptt, "denormals": run_denormals,
           "startup": run_startup,
           "sweep": run_sweep, "scaling": run_scaling}


def gpu_check(args, results: dict) -> dict:
    """The GPU row of the summary: measured only by a run with --device cuda."""
    row = {"name": "GPU: explicit+compile / cuDNN native, LSTM-128 (scaling, --device cuda)", "value": None,
           "target": None, "detail": "unmeasured: run rnnexp-bench --device cuda --only scaling "
                                     "--scaling-backends native,explicit+compile on a GPU machine"}
    scaling = results.get("scaling", {})
    if args.device == "cuda" and scaling.get("rows"):
        base = {r["backend"]: r for r in scaling["rows"] if r["cell"] == "lstm" and r["seq_len"] == 28
                and r["hidden_size"] == 128 and r["batch_size"] == 128}
        if "native" in base and "explicit+compile" in base:
            row.update(value=base["explicit+compile"]["step_ms"] / base["native"]["step_ms"],
                       detail=f"{base['native']['step_ms']:.2f} vs {base['explicit+compile']['step_ms']:.2f} ms/step, "
                              f"{scaling['setup']['precision']}")
    return row


# -- reporting ------------------------------------------------------------------------------------
def describe_machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    facts = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
             "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
             "load_average_before": os.getloadavg()}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def is_met(check: dict) -> bool | None:
    if check.get("value") is None or check.get("target") is None:
        return None
    if check.get("higher_is_better"):
        return check["value"] >= check["target"]
    return check["value"] <= check["target"]


def print_summary(report: dict, console) -> None:
    from rich.table import Table

    m = report["machine"]
    load = " / ".join(f"{x:.2f}" for x in m["load_average_before"])
    after = " / ".join(f"{x:.2f}" for x in m.get("load_average_after", ()))
    table = Table(title=f"rnnexp-bench on {m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average "
                        f"(1/5/15 min) {load} before, {after} after")
    for title in ("measure", "value", "target", "met", "detail"):
        table.add_column(title, justify="right" if title in ("value", "target") else "left")
    for check in report["checks"]:
        met = is_met(check)
        target = check.get("target")
        sign = ">=" if check.get("higher_is_better") else "<="
        table.add_row(check["name"] + (f"  [dim]({check['owner']})[/dim]" if check.get("owner") else ""),
                      "unmeasured" if check.get("value") is None else f"{check['value']:.3f}",
                      "" if target is None else f"{sign} {target:g}",
                      {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[met], check.get("detail", ""))
    console.print(table)


def print_sections(results: dict, console) -> None:
    from importlib import import_module

    modules = {"epoch": "epoch", "bptt": "truncation", "denormals": "denormals", "startup": "startup",
               "sweep": "sweep_throughput", "scaling": "scaling"}
    for name, result in results.items():
        if "error" in result:
            console.print(f"[red]{name}: failed[/red]\n{result['error']}")
        elif name == "backends":
            from rnnexp.bench.backends import print_rows

            print_rows(result["rows"])
        else:
            import_module(f"rnnexp.bench.{modules[name]}").print_result(result, console)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    sections = _names(args.only)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--only {','.join(unknown) or repr(args.only)}: allowed values are {', '.join(SECTIONS)}")
    from rnnexp.bench.sweep_throughput import MODE_FLAGS

    unknown = [m for m in _names(args.sweep_modes) if m not in MODE_FLAGS]
    if unknown:
        parser.error(f"--sweep-modes {','.join(unknown)}: allowed values are {', '.join(MODE_FLAGS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    from rich.console import Console

    from rnnexp.bench.config import quiet_lightning

    quiet_lightning()
    # flush_denormal as a run has it, set before torch's first parallel op so that the intra-op
    # threads take it too (each CPU thread has its own flag): the in-process sections train like runs
    from rnnexp.bench.config import compose_run_config
    from rnnexp.build import configure_torch

    configure_torch(compose_run_config([], tempfile.gettempdir()))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160,
                      file=sys.stderr if args.json else sys.stdout)
    report = {"machine": describe_machine(), "command": ["rnnexp-bench", *(argv if argv is not None else sys.argv[1:])],
              "sections": {}, "checks": []}
    for name in sections:
        started = time.time()
        console.print(f"[dim]{name} ...[/dim]")
        try:
            with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout: JSON only
                result = RUNNERS[name](args)
        except Exception as exc:  # noqa: BLE001  (one failing section must not lose the others' numbers)
            result = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"}
        result["elapsed_s"] = time.time() - started
        report["sections"][name] = result
        report["checks"] += result.get("checks", [])
    report["checks"].append(gpu_check(args, report["sections"]))
    for check in report["checks"]:
        check["met"] = is_met(check)
    report["machine"]["load_average_after"] = os.getloadavg()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_sections(report["sections"], console)
        print_summary(report, console)
        console.print(f"results: {out_dir / 'bench.json'}")
    failed = [name for name, result in report["sections"].items() if "error" in result]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
