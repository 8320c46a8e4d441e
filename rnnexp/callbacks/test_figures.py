"""Pictures of the test set, drawn once a run is tested: a confusion matrix for classification
tasks, predictions against targets for regression tasks.

Each goes to TensorBoard (Images tab, tag `test/confusion` or `test/prediction_vs_target`) and to
`<run dir>/figures/*.png`. Cheap by construction: the callback reads the predictions the test
step already made and keeps only a C x C count matrix or a bounded sample of points.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

log = logging.getLogger(__name__)


def confusion_figure(counts: np.ndarray, title: str = "") -> Figure:
    """Rows: true class, columns: predicted class; colour = share of the true class (so rare
    classes read as clearly as common ones), numbers = counts while they fit."""
    n = counts.shape[0]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(3.0 + 0.45 * n, 12.0)
    fig = Figure(figsize=(size, size * 0.9), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if n <= 20:
        for true in range(n):
            for predicted in range(n):
                ax.text(predicted, true, str(int(counts[true, predicted])), ha="center", va="center",
                        fontsize=7, color="white" if shares[true, predicted] > 0.5 else "black")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def prediction_figure(prediction: np.ndarray, target: np.ndarray, title: str = "") -> Figure:
    """Prediction against target; a perfect model puts every point on the diagonal."""
    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(target, prediction, s=6, alpha=0.5, edgecolors="none")
    low = float(min(target.min(), prediction.min())) if len(target) else 0.0
    high = float(max(target.max(), prediction.max())) if len(target) else 1.0
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="prediction = target")
    ax.set_xlabel("target")
    ax.set_ylabel("prediction")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def log_figure(trainer: pl.Trainer, tag: str, fig: Figure) -> None:
    """add_figure on every TensorBoard logger of the trainer (others have no images)."""
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
            logger.experiment.flush()


class TestFigures(pl.Callback):
    """Confusion matrix (classification) or prediction-vs-target scatter (regression) of the test set.

    dirpath:     where the PNGs go (the run directory's figures/)
    max_points:  regression points kept for the scatter (the first ones seen; the plot stays legible)
    In a distributed run the confusion counts are summed over processes; the scatter shows
    rank 0's share of the test set.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, dirpath: str, max_points: int = 2000, enabled: bool = True):
        self.dirpath = Path(dirpath)
        self.max_points = int(max_points)
        self.enabled = bool(enabled)
        self._counts: torch.Tensor | None = None
        self._points: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._kept = 0

    def on_test_epoch_start(self, trainer, pl_module):
        self._counts, self._points, self._kept = None, [], 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not self.enabled:
            return
        x, target = batch
        prediction = outputs if isinstance(outputs, torch.Tensor) else None
        if prediction is None:  # a test_step that returns nothing: predict again
            with torch.no_grad():
                prediction, _ = pl_module(x)
        prediction, target = pl_module._scored(prediction.detach(), target)
        if pl_module.task.is_classification:
            classes = pl_module.task.output_size
            pairs = target.long() * classes + prediction.argmax(-1)
            counts = torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)
            self._counts = counts if self._counts is None else self._counts + counts
        elif self._kept < self.max_points:
            take = self.max_points - self._kept
            self._points.append((prediction[:take].float().cpu(), target[:take].float().cpu()))
            self._kept += len(self._points[-1][0])

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.enabled:
            return
        counts = self._counts
        if pl_module.task.is_classification and counts is not None and trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")  # every rank must take part
        if not trainer.is_global_zero:
            return
        if pl_module.task.is_classification:
            if counts is None:
                return
            counts = counts.cpu().numpy()
            accuracy = np.trace(counts) / max(counts.sum(), 1)
            fig = confusion_figure(counts, f"test set: accuracy {accuracy:.4f} on {int(counts.sum())} predictions")
            tag, name = "test/confusion", "confusion_test.png"
        else:
            if not self._points:
                return
            prediction = torch.cat([p for p, _ in self._points]).numpy()
            target = torch.cat([t for _, t in self._points]).numpy()
            mse = float(np.mean((prediction - target) ** 2))
            fig = prediction_figure(prediction, target, f"test set: MSE {mse:.3e} ({len(target)} points)")
            tag, name = "test/prediction_vs_target", "prediction_test.png"
        log_figure(trainer, tag, fig)
        path = save_figure(fig, self.dirpath / name)
        log.info("test figure: %s", path)
