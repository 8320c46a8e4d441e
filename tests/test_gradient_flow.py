"""The gradient-flow callback's step-by-step forward is the encoder's own function, for every cell
and both backends: its steps are computed by the cells of rnnexp.nn.cells with the encoder's weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnexp.build import build_module
from rnnexp.callbacks.gradient_flow import gradient_norms_through_time, unrolled_encoder
from rnnexp.data.task import TaskSpec

# (cell overrides, backend): sigmoid and identity Elman cells exist only in the explicit backend
CASES = [
    (["cell=rnn"], "native"),
    (["cell=rnn"], "explicit"),
    (["cell=rnn", "cell.nonlinearity=relu"], "native"),
    (["cell=rnn", "cell.nonlinearity=relu"], "explicit"),
    (["cell=rnn", "cell.nonlinearity=sigmoid"], "explicit"),
    (["cell=rnn", "cell.nonlinearity=identity"], "explicit"),
    (["cell=irnn"], "native"),
    (["cell=irnn"], "explicit"),
    (["cell=lstm"], "native"),
    (["cell=lstm"], "explicit"),
    (["cell=gru"], "native"),
    (["cell=gru"], "explicit"),
]
IDS = ["-".join(o.split("=")[-1] for o in cell) + f"-{backend}" for cell, backend in CASES]
T = 7


def small_module(make_cfg, overrides, backend, num_layers, kind="classify_last"):
    task = TaskSpec(kind=kind, input_size=3, output_size=4 if kind.startswith("classify") else 1, seq_len=T)
    torch.manual_seed(0)
    cfg = make_cfg([*overrides, f"model.backend={backend}", f"model.num_layers={num_layers}",
                    "model.hidden_size=6"])
    module = build_module(cfg, task).eval()
    with torch.no_grad():  # weights away from their initialisation (IRNN: W = I, b = 0) so every term counts
        for p in module.encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("overrides,backend", CASES, ids=IDS)
def test_unrolled_forward_is_the_encoder_forward(make_cfg, overrides, backend, num_layers):
    module = small_module(make_cfg, overrides, backend, num_layers)
    x = torch.randn(5, T, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected_outputs, expected_state = module.encoder(x)
        outputs, state, top_states = unrolled_encoder(module.encoder, x)
    assert len(top_states) == T
    # the top layer's s_t, one graph node per step, are the encoder's outputs
    torch.testing.assert_close(torch.stack(top_states, dim=1), expected_outputs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs, expected_outputs, atol=1e-5, rtol=1e-5)
    # and the final state, every layer's, in torch's layout
    if isinstance(expected_state, tuple):
        for got, want in zip(state, expected_state, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(state, expected_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides,backend", CASES, ids=IDS)
def test_recorded_gradient_norms_are_finite_and_reach_every_step(make_cfg, overrides, backend):
    module = small_module(make_cfg, overrides, backend, num_layers=2, kind="regress_last")
    x = torch.randn(8, T, 3, generator=torch.Generator().manual_seed(2))
    y = torch.randn(8, generator=torch.Generator().manual_seed(3))
    g = gradient_norms_through_time(module, x, y)
    assert g.shape == (T,) and g.dtype == np.float64
    assert np.all(np.isfinite(g)) and np.all(g > 0)


def test_gradient_norms_are_the_backpropagated_gradient_of_each_state(make_cfg):
    """g_t is dLoss/ds_t through every later step: for the identity cell
    s_t = U x_t + W s_{t-1} + b and a loss read at step T, dLoss/ds_t = (W^T)^(T-t) dLoss/ds_T."""
    module = small_module(make_cfg, ["cell=rnn", "cell.nonlinearity=identity"], "explicit", 1, "regress_last")
    x = torch.randn(8, T, 3, generator=torch.Generator().manual_seed(4))
    y = torch.randn(8, generator=torch.Generator().manual_seed(5))
    g = gradient_norms_through_time(module, x, y)
    outputs, state, top_states = unrolled_encoder(module.encoder, x)
    loss = module.loss(module.decode(outputs, state), y)
    (g_last,) = torch.autograd.grad(loss, top_states[-1], retain_graph=True)
    W = module.encoder.core.weight_hh_l0.detach()
    expected = [(g_last @ torch.linalg.matrix_power(W, T - 1 - t)).norm(dim=-1).mean().item() for t in range(T)]
    np.testing.assert_allclose(g, expected, rtol=1e-4)
