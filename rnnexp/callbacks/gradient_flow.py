"""Gradient flow through time: how much of the loss's gradient reaches each time step.

Every `every_n_steps` optimizer steps the callback takes the batch just trained on, runs the
encoder again one step at a time so that every state s_t of the top layer is a node of the graph,
and records  g_t = mean over the batch of || dLoss / ds_t ||  for t = 1..T.

Why not the fused encoder's `outputs`: its s_{t+1} is computed from s_t inside the fused kernel,
so autograd sees outputs[:, t] only as a read-out and the gradient w.r.t. it lacks everything that
flows back through later steps, which is the very quantity wanted here. Unrolled, s_{t+1} = f(s_t, x_{t+1})
is an explicit edge and dLoss/ds_t is the full back-propagated gradient. Each step is computed by
the encoder's cell from rnnexp.nn.cells (for the native backend, the cell of its CellSpec run with
the native layer's own weights), so the cell equations are written once, there.

For a loss read at the last step, g_t / g_T shrinks geometrically with T - t when gradients
vanish: a tanh RNN loses the start of a long sequence within a few dozen steps, an LSTM does not.
Logged to TensorBoard as
  grad_flow/heatmap                image, one row per recorded training step, one column per time step
                                   (log10 g_t, colour scale shared by all rows)
  grad_flow/first_over_last        scalar g_1 / g_T
  grad_flow/log10_first_over_last  scalar log10(g_1 / g_T)
and saved at the end of training as <run dir>/figures/gradient_flow.png (and .npz with the numbers,
which `rnnexp-compare` overlays for every run of a sweep).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from rnnexp.callbacks.cadence import StepCadence
from rnnexp.nn.cells import layer_weights, make_cell

log = logging.getLogger(__name__)


def encoder_cell(encoder):
    """The cell of rnnexp.nn.cells that computes the encoder's steps: the explicit backend's own,
    else (the native backend) the one for its CellSpec, which run with the native layer's
    weights (cells.layer_weights) gives the numbers torch's fused kernel gives."""
    cell = getattr(getattr(encoder, "core", None), "cell", None)
    return cell if cell is not None else make_cell(encoder.spec)


def unrolled_encoder(encoder, x: torch.Tensor):
    """The encoder's forward pass written out step by step (unidirectional encoders), each step
    computed by the encoder's cell (rnnexp.nn.cells) with the encoder's own weights.

    Returns (outputs [B, T, H], state in torch's layout, top_states): top_states[t] is the top
    layer's s_t as its own graph node, the tensor every later step and the read-out depend on.
    Dropout between layers is left out (the recorded gradient is that of the deterministic net).
    """
    cell = encoder_cell(encoder)
    batch = x.shape[0]
    layer_input = x.transpose(0, 1)  # time-major [T, B, F], as the cells take it
    finals = []
    for layer in range(encoder.num_layers):
        U, W, b_ih, b_hh = layer_weights(encoder, layer)
        ux = cell.project_inputs(layer_input, U, b_ih, b_hh)
        W_t = W.t()
        zeros = x.new_zeros(batch, encoder.hidden_size)
        state = (zeros, zeros) if cell.has_cell_state else zeros
        states = []
        for ux_t in ux.unbind(0):
            s_t, state = cell.step(ux_t, state, W_t, b_hh)
            states.append(s_t)
        finals.append(state)
        layer_input = torch.stack(states)
    outputs = layer_input.transpose(0, 1)
    if cell.has_cell_state:
        final_state = torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals])
    else:
        final_state = torch.stack(finals)
    return outputs, final_state, states


def gradient_norms_through_time(pl_module, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """g_t = mean over the batch of ||dLoss/ds_t|| for the top layer, t = 1..T, as a float64 array."""
    with torch.enable_grad():
        outputs, state, top_states = unrolled_encoder(pl_module.encoder, x)
        prediction = pl_module.decode(outputs, state)
        loss = pl_module.loss(prediction, target)
        grads = torch.autograd.grad(loss, top_states, allow_unused=True)
    norms = [g.norm(dim=-1).mean().item() if g is not None else 0.0 for g in grads]
    return np.asarray(norms, dtype=np.float64)


def heatmap_image(rows: np.ndarray) -> np.ndarray:
    """log10 g_t of every recorded step as an RGB uint8 image [steps, T, 3] (viridis, one scale)."""
    from matplotlib import colormaps

    logs = np.log10(np.maximum(rows, 1e-30))
    low, high = float(logs.min()), float(logs.max())
    scaled = (logs - low) / (high - low) if high > low else np.zeros_like(logs)
    return (colormaps["viridis"](scaled)[..., :3] * 255).astype(np.uint8)


def heatmap_figure(rows: np.ndarray, steps: list[int], title: str):
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), dpi=100)
    ax = fig.add_subplot()
    positive = rows[rows > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    image = ax.imshow(np.maximum(rows, 1e-30), aspect="auto", origin="lower", cmap="viridis", norm=norm,
                      interpolation="nearest", extent=(0.5, rows.shape[1] + 0.5, -0.5, len(steps) - 0.5))
    fig.colorbar(image, ax=ax, label="mean ||dLoss/ds_t||")
    ticks = np.linspace(0, len(steps) - 1, num=min(len(steps), 6)).round().astype(int)
    ax.set_yticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_xlabel("time step t")
    ax.set_ylabel("training step")
    ax.set_title(title)
    fig.tight_layout()
    return fig


class GradientFlow(pl.Callback):
    """Record ||dLoss/ds_t|| per time step every `every_n_steps` optimizer steps (0 = off).

    Costs one extra step-by-step forward and backward on the current batch each time it records;
    pick every_n_steps so that is a small share of training (e.g. 50 for row MNIST).
    """

    def __init__(self, every_n_steps: int = 0, dirpath: str = "figures"):
        self.every_n_steps = int(every_n_steps)
        self.dirpath = Path(dirpath)
        self.rows: list[np.ndarray] = []
        self.steps: list[int] = []
        self._disabled_reason = ""
        self.cadence = StepCadence(self.every_n_steps)

    @property
    def active(self) -> bool:
        return self.every_n_steps > 0

    def _usable(self, pl_module) -> bool:
        if self._disabled_reason:
            return False
        encoder = pl_module.encoder
        if encoder.bidirectional:
            self._disabled_reason = "a bidirectional encoder has no single s_t per step"
        elif not hasattr(pl_module, "decode"):
            self._disabled_reason = "the LightningModule has no decode(outputs, state)"
        if self._disabled_reason:
            log.warning("gradient flow is not recorded: %s", self._disabled_reason)
        return not self._disabled_reason

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.cadence.batch_started(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.cadence.due(trainer):  # truncated BPTT may step several times a batch
            return
        step = trainer.global_step
        if not trainer.is_global_zero or not self._usable(pl_module):
            return
        x, target = batch
        was_training = pl_module.training
        pl_module.eval()  # no dropout: the picture is of the net, not of one dropout mask
        try:
            norms = gradient_norms_through_time(pl_module, x, target)
        finally:
            pl_module.train(was_training)
        self.rows.append(norms)
        self.steps.append(step)
        self._log(trainer, norms, step)

    def _log(self, trainer, norms: np.ndarray, step: int) -> None:
        ratio = norms[0] / norms[-1] if norms[-1] > 0 else float("nan")
        rows = np.stack(self.rows)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.TensorBoardLogger):
                writer = logger.experiment
                writer.add_scalar("grad_flow/first_over_last", ratio, step)
                if ratio > 0:
                    writer.add_scalar("grad_flow/log10_first_over_last", math.log10(ratio), step)
                # the whole history so far, so the latest image is the full time x training-step map
                writer.add_image("grad_flow/heatmap", heatmap_image(rows), step, dataformats="HWC")

    def on_train_end(self, trainer, pl_module):
        if not self.rows or not trainer.is_global_zero:
            return
        rows = np.stack(self.rows)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        np.savez(self.dirpath / "gradient_flow.npz", norms=rows, steps=np.asarray(self.steps))
        spec = pl_module.encoder.spec
        cell = spec.family if spec.family != "elman" else f"elman ({spec.nonlinearity})"
        ratio = rows[-1, 0] / max(rows[-1, -1], 1e-30)
        shown = f"{ratio:.2e}" if ratio > 0 else "0 (underflows float32)"
        title = (f"{cell}, {pl_module.encoder.num_layers} layer(s), T = {rows.shape[1]}\n"
                 f"g_1 / g_T = {shown} at step {self.steps[-1]}")
        heatmap_figure(rows, self.steps, title).savefig(self.dirpath / "gradient_flow.png")
