"""`rnnexp-bench`: what rnnexp costs against the loop a researcher would write, measured in one run.

    rnnexp-bench                                  # every section, small defaults
    rnnexp-bench --only epoch,startup --json      # some sections; JSON on stdout instead of tables
    rnnexp-bench --only epoch --steps 0 --repeats 5 --override='~logger.tensorboard'

Sections (rnnexp.bench.sections): epoch, backends, bptt, denormals, startup, sweep, scaling. Every
ratio is against a baseline measured in the same run; the machine and its load average before and
after are printed with them: compare ratios, not absolute times, across machines.
Sizes: epoch --steps batches per timing (0: a whole epoch) x --repeats; backends --backend-steps x
--backend-repeats steps per variant; bptt, denormals at T = --seq-len (k1 = k2 = --k), --bptt-steps,
--denormal-repeats; --startup-repeats; sweep --sweep-steps per job; scaling >= --scaling-steps a point.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

from rnnexp.bench import sections

SECTIONS = ("epoch", "backends", "bptt", "denormals", "startup", "sweep", "scaling")
SWEEP_MODES = ("sequential", "sequential_1_thread", "joblib")
SIZES = {"hidden-size": 128, "batch-size": 128, "threads": 2, "steps": 100, "repeats": 9, "backend-steps": 10,
         "backend-repeats": 3, "seq-len": 784, "k": 28, "bptt-steps": 2, "denormal-repeats": 3, "startup-repeats": 3,
         "sweep-steps": 1500, "sweep-repeats": 1, "scaling-steps": 2}
LISTS = {"only": ",".join(SECTIONS), "cells": "lstm", "sweep-modes": ",".join(SWEEP_MODES), "scaling-cells": "lstm,gru",
         "scaling-backends": "native,explicit", "scaling-seq-lens": "28,112,784",
         "scaling-hidden-sizes": "64,128,256,512", "scaling-batch-sizes": "32,128,512"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnnexp-bench", description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in LISTS.items():  # argparse parses a string default with `type` too
        p.add_argument(f"--{name}", default=default, help=f"comma list; default: {default}",
                       type=lambda text: [int(v) if v.isdigit() else v for v in map(str.strip, text.split(",")) if v])
    for name, default in SIZES.items():
        p.add_argument(f"--{name}", type=int, default=default, help=f"default: {default}")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout instead of tables")
    p.add_argument("--out-dir", default="outputs/bench", help="bench.json and the scaling plot go here")
    p.add_argument("--cell", default="lstm", help="cell of the epoch, bptt, denormals and sweep sections")
    p.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist"))
    p.add_argument("--source", default="auto", help="data.source (bundled: the 5k MNIST subset, mnist only)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", default="32-true", choices=("32-true", "16-mixed", "bf16-mixed"),
                   help="trainer.precision (epoch, startup, sweep); autocast in the plain loop, backends, scaling")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="epoch: a config override of both sides, repeatable (e.g. '~logger.tensorboard')")
    p.add_argument("--no-compile", action="store_true", help="backends: no compiled variant (slow first compile)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # harness.in_child's measurement in a fresh process
    return p


def print_report(report: dict, console) -> None:
    """Each section's rows (their scalar fields), then every ratio against its target."""
    from rich.table import Table

    for name, result in report["sections"].items():
        if "error" in result:
            console.print(f"[red]{name}: failed[/red]\n{result['error']}")
            continue
        keys = [k for k, v in result["rows"][0].items() if not isinstance(v, (list, dict))]
        table = Table(*keys, title=f"{name}: " + ", ".join(f"{k}={v}" for k, v in result["setup"].items()))
        for row in result["rows"]:
            table.add_row(*(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys))
        console.print(table)
    m = report["machine"]
    load = [" / ".join(f"{x:.2f}" for x in m[k]) for k in ("load_average_before", "load_average_after")]
    table = Table("measure", "value", "target", "met", "detail", title=f"rnnexp-bench on {m['cpu']}, {m['cores']} "
                  f"cores, torch {m['torch']}; load average (1/5/15 min) {load[0]} before, {load[1]} after")
    for c in report["checks"]:
        table.add_row(c["name"], "unmeasured" if c["value"] is None else f"{c['value']:.3f}",
                      "" if c["target"] is None else f"{'>=' if c.get('higher_is_better') else '<='} {c['target']:g}",
                      {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[c["met"]], c["detail"])
    console.print(table)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.child:  # harness.in_child: a measurement that needs a fresh process; nothing set up before it
        spec = json.loads(args.child)
        torch.set_num_threads(spec["args"]["threads"])  # starts no thread yet
        print(json.dumps(getattr(sections, spec["function"])(argparse.Namespace(**spec["args"]), **spec["kwargs"])))
        return 0
    for flag, allowed in (("only", SECTIONS), ("sweep_modes", SWEEP_MODES)):
        if not getattr(args, flag) or set(getattr(args, flag)) - set(allowed):
            unknown = ",".join(v for v in getattr(args, flag) if v not in allowed)
            parser.error(f"--{flag.replace('_', '-')} {unknown}: allowed values are {', '.join(allowed)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    from rich.console import Console

    from rnnexp.bench.config import compose_run_config
    from rnnexp.build import configure_torch

    # flush_denormal as a run has it, set before torch's first parallel op so that the intra-op
    # threads take it too (each CPU thread has its own flag): the in-process sections train like runs
    configure_torch(compose_run_config([f"threads={args.threads}"], "/tmp"))
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160,
                      file=sys.stderr if args.json else sys.stdout)
    with open("/proc/cpuinfo") as f:  # Linux: the memory readings need /proc anyway
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())
    machine = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
               "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    machine["load_average_before"] = os.getloadavg()
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
    report = {"machine": machine, "command": ["rnnexp-bench", *(argv if argv is not None else sys.argv[1:])],
              "sections": {}, "checks": []}
    for name in args.only:
        started = time.time()
        console.print(f"[dim]{name} ...[/dim]")
        try:
            with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout: JSON only
                result = getattr(sections, f"run_{name}")(args)
        except Exception as exc:  # noqa: BLE001  (one failing section must not lose the others' numbers)
            result = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"}
        report["sections"][name] = {**result, "elapsed_s": time.time() - started}
        report["checks"] += result.get("checks", [])
    if not any(c["name"] == sections.GPU_CHECK["name"] for c in report["checks"]):  # scaling measures it on a GPU
        report["checks"].append(dict(sections.GPU_CHECK))
    for c in report["checks"]:  # met: None where there is no target (or no value)
        c["met"] = None if None in (c["value"], c["target"]) else (
            c["value"] >= c["target"] if c.get("higher_is_better") else c["value"] <= c["target"])
    report["machine"]["load_average_after"] = os.getloadavg()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    Path(args.out_dir, "bench.json").write_text(json.dumps(report, indent=1, default=str))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report, console)
        console.print(f"results: {Path(args.out_dir, 'bench.json')}")
    return 1 if any("error" in result for result in report["sections"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
