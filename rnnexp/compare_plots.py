"""The pictures of `rnnexp-compare`: learning curves, bar charts (mean with its 95% confidence
interval) and the gradient reaching each time step. Matplotlib's object API (no pyplot state)."""

from __future__ import annotations

import sys
from pathlib import Path

from rnnexp.compare import Run, bar_runs, format_cell, natural_key
from rnnexp.seed_stats import summarize


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


def bar_cells(scored: list[Run], metric: str, by: str, hue: str | None):
    """(groups, hues, {(group, hue): Summary}) of `metric` over the runs of each (by, hue) cell."""
    groups = sorted({run.axis(by) for run in scored}, key=natural_key)
    hues = sorted({run.axis(hue) for run in scored}, key=natural_key) if hue else [""]
    cells = {(g, h): summarize(run.metric(metric) for run in scored
                               if run.axis(by) == g and (not hue or run.axis(hue) == h))
             for g in groups for h in hues}
    return groups, hues, cells


def plot_bars(runs: list[Run], metric: str, by: str, hue: str | None, path: Path) -> Path | None:
    """Mean of `metric` per (by, hue) cell; a whisker spans the 95% confidence interval of the mean
    (Student's t) where a cell holds two runs or more (seeds), and each bar says its n.

    Only completed runs count, as in the ranking; while none of them has the metric (a sweep
    still running) the bars show the partial values of the others, and the title says so."""
    import numpy as np
    from matplotlib.figure import Figure

    scored, partial = bar_runs(runs, metric)
    if not scored:
        print(f"rnnexp-compare: no run has {metric!r}; no bar chart drawn", file=sys.stderr)
        return None
    groups, hues, cells = bar_cells(scored, metric, by, hue)
    width = 0.8 / len(hues)
    fig = Figure(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(hues)) ** 0.5 + 2), 4.2), dpi=110)
    ax = fig.add_subplot()
    several = any(s.n > 1 for s in cells.values())
    for j, hue_value in enumerate(hues):
        summaries = [cells[(g, hue_value)] for g in groups]
        means = [np.nan if s.mean is None else s.mean for s in summaries]
        half = [[0.0 if s.ci95_low is None else s.mean - s.ci95_low for s in summaries],
                [0.0 if s.ci95_high is None else s.ci95_high - s.mean for s in summaries]]
        x = np.arange(len(groups)) + (j - (len(hues) - 1) / 2) * width
        bars = ax.bar(x, means, width * 0.95, yerr=half if several else None, capsize=3,
                      label=f"{hue}={hue_value}" if hue else None)
        labels = [(format_cell(s.mean) + (f"\nn={s.n}" if several else "")) if s.n else "" for s in summaries]
        ax.bar_label(bars, labels=labels, fontsize=7, label_type="center" if several else "edge",
                     color="white" if several else "black")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_xlabel(by)
    ax.set_ylabel(metric + (" (mean, 95% CI)" if several else ""))
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
