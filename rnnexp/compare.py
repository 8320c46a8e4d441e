"""`rnnexp-compare <sweep dir or run dirs...>`: the ranked table and the plots of a sweep.

Reads each run's metrics.json and its TensorBoard events, so a sweep still running can be compared
too: a run without a final record shows the latest values its events hold. Every run found is
listed with its status. Completed runs come first, best first; every other run (running,
interrupted, no record, failed, diverged, any other status) follows them, grouped by status in
STATUS_ORDER (unknown statuses after, alphabetically), best partial value first within a status:
a partial value never outranks a completed run, and no run is dropped.

Writes into --out (default <sweep dir>/compare/):
  runs.csv, runs.md          the table: swept overrides that vary, metrics, epochs, wall time, params
  curves_<metric>.png        --curve metric vs optimizer step, one line per run
  bars_<metric>_by_<axis>.png  --metric of the completed runs grouped by --by (bars) and --hue (colours)
  gradient_flow.png          runs that recorded it: ||dLoss/ds_t|| relative to the last step
Imports neither torch nor Lightning: it answers in a second or two.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

RECORD = "metrics.json"
SKIP_DIRS = {"checkpoints", "figures", "compare", ".hydra", ".submitit"}
# overrides that say where, not what: never a column
INFRA_PREFIXES = ("paths.", "hydra.", "hydra/")
# metrics shown when present, after the sort metric, in this order
METRIC_COLUMNS = ("hp/val_acc_best", "hp/val_mse_best", "val/acc", "val/mse", "test/acc", "test/mse",
                  "val/loss", "test/loss", "train/loss")
MAX_BAR_GROUPS = 8  # an axis with more values than this is not chosen for the bar chart by default
RUN_COLUMNS = ("epochs", "global_step", "wall_time_s", "num_params")
# the order of the status groups in the table (see rank); statuses not named here follow, by name
STATUS_ORDER = ("completed", "running", "interrupted", "no record", "failed", "diverged")
STATUS_STYLE = {"completed": "green", "running": "yellow", "interrupted": "yellow", "failed": "red",
                "diverged": "magenta", "no record": "dim"}


def higher_is_better(metric: str) -> bool:
    """acc up; loss, mse and anything else down."""
    return "acc" in metric.lower()


@dataclass
class Run:
    path: Path
    record: dict
    overrides: dict[str, str]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.record.get("status", "no record")

    def metric(self, name: str) -> float | None:
        """The record's value; else (a run in progress, a crash) the latest value in its events."""
        value = (self.record.get("metrics") or {}).get(name)
        if value is None and self.curves.get(name):
            value = self.curves[name][-1][1]
        return None if value is None or not math.isfinite(float(value)) else float(value)

    def axis(self, key: str) -> str:
        """A run's value on a sweep axis: its override, else what it logged (cell -> cell.name)."""
        if key in self.overrides:
            return self.overrides[key]
        hparams = self.record.get("hparams") or {}
        for candidate in (key, f"{key}.name"):
            if candidate in hparams:
                value = hparams[candidate]
                return str(value).lower() if isinstance(value, bool) else str(value)
        return "default"


# -- reading ---------------------------------------------------------------------------------------
def is_run_dir(path: Path) -> bool:
    return (path / RECORD).is_file() or (path / ".hydra" / "overrides.yaml").is_file() or any(
        p.name.startswith("events.out.tfevents") for p in path.iterdir() if p.is_file())


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories at or below each path (a run's own subfolders are not searched)."""
    found: list[Path] = []
    for root in paths:
        if not root.is_dir():
            raise SystemExit(f"rnnexp-compare: error: {root} is not a directory")
        if is_run_dir(root):
            found.append(root)
            continue
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if here != root and is_run_dir(here):
                found.append(here)
                dirnames.clear()
                continue
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(dict.fromkeys(found))


def parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith(INFRA_PREFIXES):
            # a swept `true,false` comes back from Hydra as True / False: one spelling for both
            parsed[key] = value.lower() if value in ("True", "False") else value
    return parsed


def read_overrides(run_dir: Path, record: dict) -> dict[str, str]:
    if record.get("overrides"):
        return parse_overrides(record["overrides"])
    hydra_overrides = run_dir / ".hydra" / "overrides.yaml"
    if hydra_overrides.is_file():  # a job that has not written its record yet
        from omegaconf import OmegaConf

        return parse_overrides(list(OmegaConf.load(hydra_overrides)))
    return {}


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in the run's event files, as (step, value), in step order."""
    if not any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir()):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0, IMAGES: 1, TENSORS: 1})
    try:
        events.Reload()
    except (OSError, ValueError, RuntimeError) as exc:  # a file being written can end mid-record
        print(f"rnnexp-compare: warning: {run_dir}: events partly read ({exc})", file=sys.stderr)
    return {tag: sorted((e.step, float(e.value)) for e in events.Scalars(tag))
            for tag in events.Tags().get("scalars", [])}


def load_run(run_dir: Path) -> Run:
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        record = {}
    return Run(run_dir, record, read_overrides(run_dir, record), read_scalars(run_dir))


def varying_axes(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (a key missing from a run counts as a
    value); with a single run, all its overrides. Falls back to logged hparams that vary."""
    keys = list(dict.fromkeys(k for run in runs for k in run.overrides))
    if len(runs) == 1:
        return keys
    varying = [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]
    if varying:
        return varying
    hparams = [run.record.get("hparams") or {} for run in runs]
    names = dict.fromkeys(k for h in hparams for k in h if k not in ("model.num_params", "data.source_used"))
    return [k for k in names if len({json.dumps(h.get(k)) for h in hparams}) > 1]


# -- the table -------------------------------------------------------------------------------------
def default_sort_metric(runs: list[Run]) -> str:
    named = [run.record.get("optimized_metric") for run in runs if run.record.get("optimized_metric")]
    if named:
        return max(set(named), key=named.count)
    present = [m for m in METRIC_COLUMNS if any(run.metric(m) is not None for run in runs)]
    return present[0] if present else "val/loss"


def status_position(status: str) -> tuple[int, str]:
    """Where a status's group sorts: STATUS_ORDER, then any other status (e.g. pruned) by name."""
    if status in STATUS_ORDER:
        return STATUS_ORDER.index(status), ""
    return len(STATUS_ORDER), status


def rank(runs: list[Run], metric: str, maximize: bool) -> list[Run]:
    """Completed runs first, best first; then every other run, grouped by status (STATUS_ORDER,
    then other statuses by name) and best first within its status. The partial value of a run
    that did not complete (a diverged run's last good epoch, a running one's latest) never puts it
    above a completed run. Within a group, runs without the metric come last; ties keep the
    original order (the sort is stable)."""
    def key(run: Run):
        value = run.metric(metric)
        return (status_position(run.status), value is None,
                0.0 if value is None else (-value if maximize else value))
    return sorted(runs, key=key)


def table_rows(runs: list[Run], axes: list[str], metrics: list[str], root: Path) -> list[dict]:
    rows = []
    for position, run in enumerate(runs, 1):
        row = {"rank": position, "status": run.status}
        row.update({axis: run.axis(axis) for axis in axes})
        row.update({m: run.metric(m) for m in metrics})
        for column in RUN_COLUMNS:
            row[column] = run.record.get(column)
        if row["global_step"] is None and run.curves:  # in progress: the furthest step logged
            row["global_step"] = max(points[-1][0] for points in run.curves.values())
        row["run_dir"] = os.path.relpath(run.path, root)
        rows.append(row)
    return rows


def format_cell(value, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if column == "wall_time_s":
            return f"{value:.1f}"
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def write_markdown(rows: list[dict], path: Path, caption: str) -> None:
    columns = [c for c in rows[0] if c != "run_dir"]
    lines = [caption, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row[c], c).replace("|", "\\|") for c in columns) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


def print_table(rows: list[dict], caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=caption, title_justify="left", header_style="bold")
    columns = [c for c in rows[0] if c != "run_dir"]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("status",) else "left",
                         overflow="fold")
    for row in rows:
        cells = [format_cell(row[c], c) for c in columns]
        cells[columns.index("status")] = f"[{STATUS_STYLE.get(row['status'], 'white')}]{row['status']}[/]"
        table.add_row(*cells)
    # piped into a file or CI log there is no terminal width to respect: do not fold the table
    Console(width=None if sys.stdout.isatty() else 250).print(table)


# -- the plots -------------------------------------------------------------------------------------
def run_label(run: Run, axes: list[str]) -> str:
    label = ", ".join(f"{a}={run.axis(a)}" for a in axes) or run.path.name
    return label if run.status == "completed" else f"{label} [{run.status}]"


def plot_curves(runs: list[Run], axes: list[str], tag: str, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    plotted = [run for run in runs if run.curves.get(tag)]
    if not plotted:
        print(f"rnnexp-compare: no run logged {tag!r}; no learning curves drawn", file=sys.stderr)
        return None
    fig = Figure(figsize=(8.0, 4.5), dpi=110)
    ax = fig.add_subplot()
    for run in plotted:
        steps, values = zip(*run.curves[tag])
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3,
                linestyle="-" if run.status == "completed" else "--", label=run_label(run, axes))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(tag)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{tag} over training, {len(plotted)} runs")
    fig.savefig(path, bbox_inches="tight")  # the legend sits outside the axes
    return path


def bar_runs(runs: list[Run], metric: str) -> tuple[list[Run], bool]:
    """The runs a bar chart of `metric` averages, in ranked order, and whether they are partial:
    the completed runs that have it; while there are none (a sweep in progress), every run that
    has it (partial=True)."""
    scored = [run for run in runs if run.metric(metric) is not None]
    completed = [run for run in scored if run.status == "completed"]
    return (completed, False) if completed else (scored, bool(scored))


def plot_bars(runs: list[Run], metric: str, by: str, hue: str | None, path: Path) -> Path | None:
    """Mean of `metric` per (by, hue) cell; whiskers span min..max when a cell holds several runs.

    Only completed runs count, as in the ranking; while none of them has the metric (a sweep
    still running) the bars show the partial values of the others, and the title says so."""
    import numpy as np
    from matplotlib.figure import Figure

    scored, partial = bar_runs(runs, metric)
    if not scored:
        print(f"rnnexp-compare: no run has {metric!r}; no bar chart drawn", file=sys.stderr)
        return None
    groups = sorted({run.axis(by) for run in scored}, key=natural_key)
    hues = sorted({run.axis(hue) for run in scored}, key=natural_key) if hue else [""]
    width = 0.8 / len(hues)
    fig = Figure(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(hues)) ** 0.5 + 2), 4.2), dpi=110)
    ax = fig.add_subplot()
    for j, hue_value in enumerate(hues):
        means, low, high = [], [], []
        for group in groups:
            values = [run.metric(metric) for run in scored
                      if run.axis(by) == group and (not hue or run.axis(hue) == hue_value)]
            mean = float(np.mean(values)) if values else np.nan
            means.append(mean)
            low.append(mean - min(values) if values else 0.0)
            high.append(max(values) - mean if values else 0.0)
        x = np.arange(len(groups)) + (j - (len(hues) - 1) / 2) * width
        spread = [low, high] if any(low) or any(high) else None  # whiskers only where runs differ
        bars = ax.bar(x, means, width * 0.95, yerr=spread, capsize=3,
                      label=f"{hue}={hue_value}" if hue else None)
        ax.bar_label(bars, labels=[format_cell(m) if math.isfinite(m) else "" for m in means], fontsize=7)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_xlabel(by)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by {by}" + (f" and {hue}" if hue else "")
                 + (" (no run completed: partial values)" if partial else ""))
    if hue:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_gradient_flow(runs: list[Run], axes: list[str], path: Path) -> Path | None:
    """g_t / g_T at each run's last gradient-flow record (callbacks.gradient_flow.every_n_steps > 0),
    one line per run on one log scale: where a line drops, the gradient no longer reaches back."""
    import numpy as np
    from matplotlib.figure import Figure

    saved = [(run, np.load(run.path / "figures" / "gradient_flow.npz")) for run in runs
             if (run.path / "figures" / "gradient_flow.npz").is_file()]
    if not saved:
        return None
    fig = Figure(figsize=(8.0, 4.5), dpi=110)
    ax = fig.add_subplot()
    for run, data in saved:
        norms, step = data["norms"][-1], int(data["steps"][-1])
        relative = norms / norms[-1] if norms[-1] > 0 else norms
        relative = np.where(relative > 0, relative, np.nan)  # underflowed to 0: the line stops there
        ax.semilogy(np.arange(1, len(norms) + 1), relative, label=f"{run_label(run, axes)} (step {step})")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dLoss/ds_t|| / ||dLoss/ds_T||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("gradient reaching each time step, relative to the last")
    fig.savefig(path, bbox_inches="tight")
    return path


def is_categorical(values: set[str]) -> bool:
    """Few values, and not fractional numbers (a sampled learning rate makes one bar per run)."""
    def fractional(v: str) -> bool:
        try:
            return not float(v).is_integer()
        except ValueError:
            return False
    return len(values) <= MAX_BAR_GROUPS and not any(fractional(v) for v in values)


def natural_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


# -- command line ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rnnexp-compare", description="Rank the runs of a sweep and plot them.",
        epilog="example: rnnexp-compare outputs/multirun/2026-01-02/10-00-00 --by cell --hue model.bidirectional")
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep directory, or run directories")
    parser.add_argument("--sort", help="metric to rank by (default: the runs' optimized_metric)")
    parser.add_argument("--direction", choices=("max", "min"),
                        help="best is the largest or smallest value (default: max for acc, min otherwise)")
    parser.add_argument("--curve", help="metric to draw over steps (default: val/<the sort metric's kind>)")
    parser.add_argument("--metric", help="metric of the bar chart (default: the sort metric)")
    parser.add_argument("--by", help="axis of the bar groups, an override key such as cell (default: the first that varies)")
    parser.add_argument("--hue", help="axis of the bar colours (default: the next that varies; none: one colour)")
    parser.add_argument("--out", type=Path, help="output folder (default: <sweep dir>/compare)")
    parser.add_argument("--no-plots", action="store_true", help="only the table and its files")
    return parser.parse_args(argv)


def default_curve(sort_metric: str) -> str:
    for kind in ("acc", "mse"):
        if kind in sort_metric:
            return f"val/{kind}"
    return sort_metric if "/" in sort_metric else "val/loss"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = [p.resolve() for p in args.paths]
    run_dirs = find_runs(paths)
    if not run_dirs:
        print(f"rnnexp-compare: error: no run directories (with {RECORD}, .hydra/ or events) under "
              + ", ".join(map(str, paths)), file=sys.stderr)
        return 2
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0]
    out = args.out or root / "compare"
    out.mkdir(parents=True, exist_ok=True)

    runs = [load_run(d) for d in run_dirs]
    axes = varying_axes(runs)
    sort_metric = args.sort or default_sort_metric(runs)
    maximize = args.direction == "max" if args.direction else higher_is_better(sort_metric)
    ranked = rank(runs, sort_metric, maximize)
    metrics = [sort_metric] + [m for m in METRIC_COLUMNS if m != sort_metric and
                               any(run.metric(m) is not None for run in runs)]
    rows = table_rows(ranked, axes, metrics, root)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(
        {s: sum(r.status == s for r in runs) for s in {r.status for r in runs}}.items()))
    caption = (f"{root}: {len(runs)} runs ({statuses}), ranked by {sort_metric} ({'max' if maximize else 'min'})"
               ", completed runs first")
    print_table(rows, caption)
    write_csv(rows, out / "runs.csv")
    write_markdown(rows, out / "runs.md", caption)
    written = [out / "runs.csv", out / "runs.md"]

    if not args.no_plots:
        tag = args.curve or default_curve(sort_metric)
        written.append(plot_curves(ranked, axes, tag, out / f"curves_{slug(tag)}.png"))
        # default axes: those with few values (a cell, a direction), not a continuous learning rate
        few = [a for a in axes if is_categorical({run.axis(a) for run in runs})]
        by = args.by or (few[0] if few else None)
        hue = args.hue or next((a for a in few if a != by), None)
        hue = None if hue == "none" else hue
        if by:
            bar_metric = args.metric or sort_metric
            name = f"bars_{slug(bar_metric)}_by_{slug(by)}" + (f"_{slug(hue)}" if hue else "") + ".png"
            written.append(plot_bars(ranked, bar_metric, by, hue, out / name))
        written.append(plot_gradient_flow(ranked, axes, out / "gradient_flow.png"))
    print("written: " + ", ".join(str(p) for p in written if p is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
