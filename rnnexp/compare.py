"""`rnnexp-compare <sweep dir or run dirs...>`: the ranked table and the plots of a sweep.

Reads each run's metrics.json and its TensorBoard events, so a sweep still running can be compared
too: a run without a final record shows the latest values its events hold. Every run found is
listed with its status. Completed runs come first, best first; every other run (running,
interrupted, no record, failed, diverged, any other status) follows them, grouped by status in
STATUS_ORDER (unknown statuses after, alphabetically), best partial value first within a status:
a partial value never outranks a completed run, and no run is dropped.

Writes into --out (default <sweep dir>/compare/):
  runs.csv, runs.md          the table: swept overrides that vary, metrics, epochs, wall time, params
  groups.csv, groups.md      runs that differ only in --over (the seed, by default when it varies),
                             one row per group, best first: n, <metric>_mean, _std, _ci95_low,
                             _ci95_high (Student's t), <metric>_p_welch (Welch's t-test against the
                             best group); completed runs with a finite value count, the others are
                             counted in `excluded`
  curves_<metric>.png        --curve metric vs optimizer step, one line per run
  bars_<metric>_by_<axis>.png  --metric of the completed runs grouped by --by (bars) and --hue
                             (colours): the mean, with its 95% CI where a bar holds several runs
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

from rnnexp.seed_stats import SEED_KEYS, group_name, summarize, welch_p_value
from rnnexp.sweep_naming import parse_overrides  # leaves out where-not-what keys: paths., hydra., trial.

RECORD = "metrics.json"
SKIP_DIRS = {"checkpoints", "figures", "compare", ".hydra", ".submitit"}
# metrics shown when present, after the sort metric, in this order
METRIC_COLUMNS = ("hp/val_acc_best", "hp/val_mse_best", "val/acc", "val/mse", "test/acc", "test/mse",
                  "val/loss", "test/loss", "train/loss")
MAX_BAR_GROUPS = 8  # an axis with more values than this is not chosen for the bar chart by default
RUN_COLUMNS = ("epochs", "global_step", "wall_time_s", "num_params")
# the seed-group statistics cover the sort metric and these, when present
GROUP_METRICS = ("test/acc", "test/mse")
# a hyper-parameter search's trial (rnnexp's Optuna sweeper): columns shown when a record has them
TRIAL_COLUMNS = ("trial", "trial_state", "pruned_at_step")
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

    def trial(self) -> dict:
        """trial number, state and pruned step of a search's trial, from the record's `trial`
        (rnnexp.records: number, state, pruned_at_step once pruned); {} for a run outside a search."""
        trial = self.record.get("trial") or {}
        values = {"trial": trial.get("number"), "trial_state": trial.get("state"),
                  "pruned_at_step": trial.get("pruned_at_step")}
        return {k: v for k, v in values.items() if v is not None}

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


def table_rows(runs: list[Run], axes: list[str], metrics: list[str], root: Path,
               over: list[str] | None = None) -> list[dict]:
    """One row per run; with `over` (seed grouping), a `group` column names each run's group."""
    trial_columns = [c for c in TRIAL_COLUMNS if any(c in run.trial() for run in runs)]
    rows = []
    for position, run in enumerate(runs, 1):
        row = {"rank": position, "status": run.status}
        row.update({column: run.trial().get(column) for column in trial_columns})
        row.update({axis: run.axis(axis) for axis in axes})
        row.update({m: run.metric(m) for m in metrics})
        for column in RUN_COLUMNS:
            row[column] = run.record.get(column)
        if row["global_step"] is None and run.curves:  # in progress: the furthest step logged
            row["global_step"] = max(points[-1][0] for points in run.curves.values())
        if over:
            row["group"] = run_group(run, axes, over)
        row["run_dir"] = os.path.relpath(run.path, root)
        rows.append(row)
    return rows


# -- groups of seeds -------------------------------------------------------------------------------
def run_group(run: Run, axes: list[str], over: list[str]) -> str:
    """The group a run belongs to: its overrides without the `over` keys (seed_stats.group_name,
    the name TensorBoard shows); runs without overrides are told apart by the axes they vary on."""
    if run.overrides:
        return group_name(run.overrides, over)
    return group_name({a: run.axis(a) for a in axes}, over)


def resolve_over(option: str | None, axes: list[str]) -> list[str]:
    """--over: the seed keys when they vary and no option is given; `none`: no groups."""
    if not option:
        return [k for k in SEED_KEYS if k in axes]
    over = [] if option == "none" else [k.strip() for k in option.split(",") if k.strip()]
    unknown = [k for k in over if k not in axes]
    if unknown:
        raise SystemExit(f"rnnexp-compare: error: --over {option}: {', '.join(unknown)} does not vary between "
                         f"these runs (keys that vary: {', '.join(axes) or 'none'}); pass one of those, or none")
    if "seed" in over:  # the data's shuffle seed follows the seed (conf/data: shuffle_seed: ${seed})
        over += [k for k in SEED_KEYS if k in axes and k not in over]
    return over


def group_rows(runs: list[Run], axes: list[str], over: list[str], sort_metric: str, maximize: bool,
               metrics: list[str]) -> list[dict]:
    """One row per group of runs that differ only in `over`, best mean of `sort_metric` first.

    A run counts when it completed with a finite `sort_metric`; the others (running, failed,
    diverged, NaN) are counted in `excluded`. For each metric: n-run mean, sample std, 95% CI of
    the mean (Student's t) and Welch's two-sided p-value against the best group (rank 1; none
    where a group has fewer than 2 runs or neither group any spread)."""
    keep = [a for a in axes if a not in over]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run_group(run, axes, over), []).append(run)
    counted = {name: [r for r in members if r.status == "completed" and r.metric(sort_metric) is not None]
               for name, members in groups.items()}
    summaries = {name: {m: summarize(r.metric(m) for r in counted[name]) for m in metrics} for name in groups}

    def key(name: str):
        mean = summaries[name][sort_metric].mean
        return (mean is None, 0.0 if mean is None else (-mean if maximize else mean))
    order = sorted(groups, key=key)
    best = order[0]
    rows = []
    for position, name in enumerate(order, 1):
        first = groups[name][0]
        row = {"rank": position, **{a: first.axis(a) for a in keep},
               "n": len(counted[name]), "excluded": len(groups[name]) - len(counted[name])}
        for m in metrics:
            s = summaries[name][m]
            row.update({f"{m}_mean": s.mean, f"{m}_std": s.std, f"{m}_ci95_low": s.ci95_low,
                        f"{m}_ci95_high": s.ci95_high})
            row[f"{m}_p_welch"] = None if name == best else welch_p_value(
                [r.metric(m) for r in counted[best]], [r.metric(m) for r in counted[name]])
        row["group"] = name
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


# in the CSV only: too long for a table read by eye
CSV_ONLY = ("run_dir", "group")


def write_markdown(rows: list[dict], path: Path, caption: str) -> None:
    columns = [c for c in rows[0] if c not in CSV_ONLY]
    lines = [caption, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row[c], c).replace("|", "\\|") for c in columns) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")


def print_table(rows: list[dict], caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=caption, title_justify="left", header_style="bold")
    columns = [c for c in rows[0] if c not in CSV_ONLY]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("status",) else "left",
                         overflow="fold")
    for row in rows:
        cells = [format_cell(row[c], c) for c in columns]
        if "status" in columns:
            cells[columns.index("status")] = f"[{STATUS_STYLE.get(row['status'], 'white')}]{row['status']}[/]"
        table.add_row(*cells)
    # piped into a file or CI log there is no terminal width to respect: do not fold the table
    Console(width=None if sys.stdout.isatty() else 250).print(table)


# -- the plots (drawn by rnnexp.compare_plots) ---------------------------------------------------
def bar_runs(runs: list[Run], metric: str) -> tuple[list[Run], bool]:
    """The runs a bar chart of `metric` averages, in ranked order, and whether they are partial:
    the completed runs that have it; while there are none (a sweep in progress), every run that
    has it (partial=True)."""
    scored = [run for run in runs if run.metric(metric) is not None]
    completed = [run for run in scored if run.status == "completed"]
    return (completed, False) if completed else (scored, bool(scored))


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
    parser.add_argument("--over", help="comma-separated keys: runs that differ only in them form a group (n, mean, "
                        "std, 95%% CI, Welch's p); default: seed, when it varies; none: no groups")
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
    over = resolve_over(args.over, axes)
    rows = table_rows(ranked, axes, metrics, root, over)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(
        {s: sum(r.status == s for r in runs) for s in {r.status for r in runs}}.items()))
    caption = (f"{root}: {len(runs)} runs ({statuses}), ranked by {sort_metric} ({'max' if maximize else 'min'})"
               ", completed runs first")
    print_table(rows, caption)
    write_csv(rows, out / "runs.csv")
    write_markdown(rows, out / "runs.md", caption)
    written = [out / "runs.csv", out / "runs.md"]
    if over:
        group_metrics = [sort_metric] + [m for m in GROUP_METRICS if m != sort_metric and m in metrics]
        groups = group_rows(runs, axes, over, sort_metric, maximize, group_metrics)
        excluded = sum(row["excluded"] for row in groups)
        group_caption = (f"{len(groups)} group{'s' * (len(groups) != 1)} of runs that differ only in "
                         f"{', '.join(over)}: mean, std and "
                         f"95% CI (Student's t) over completed runs ({excluded} excluded: not completed "
                         f"or no value), best {sort_metric} first; p_welch: Welch's t-test against rank 1")
        print_table(groups, group_caption)
        write_csv(groups, out / "groups.csv")
        write_markdown(groups, out / "groups.md", group_caption)
        written += [out / "groups.csv", out / "groups.md"]

    if not args.no_plots:
        from rnnexp.compare_plots import plot_bars, plot_curves, plot_gradient_flow

        tag = args.curve or default_curve(sort_metric)
        written.append(plot_curves(ranked, axes, tag, out / f"curves_{slug(tag)}.png"))
        # default axes: those with few values (a cell, a direction), not a continuous learning rate,
        # nor the seeds a group pools
        few = [a for a in axes if a not in over and is_categorical({run.axis(a) for run in runs})]
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
