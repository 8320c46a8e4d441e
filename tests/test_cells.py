"""One step of each explicit cell equals its equation and torch's own cell on the same weights."""

from __future__ import annotations

import pytest
import torch

from rnnexp.errors import ConfigError
from rnnexp.nn.cells import ELMAN_ACTIVATIONS, ElmanCell, GRUCell, LSTMCell, make_cell
from rnnexp.nn.recurrent import CellSpec

B, F_IN, H = 4, 3, 5


def one_step(cell, torch_cell, x, state):
    """Run `cell` for one step on torch_cell's weights (the explicit layer's calling convention)."""
    U, W = torch_cell.weight_ih, torch_cell.weight_hh
    ux = cell.project_inputs(x[None], U, torch_cell.bias_ih, torch_cell.bias_hh)[0]
    return cell.step(ux, state, W.t(), torch_cell.bias_hh)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(B, F_IN, dtype=torch.float64)


@pytest.mark.parametrize("activation", ELMAN_ACTIVATIONS)
def test_elman_step_is_its_equation(activation, x):
    torch.manual_seed(1)
    U, W, b_ih, b_hh = (torch.randn(H, F_IN), torch.randn(H, H), torch.randn(H), torch.randn(H))
    U, W, b_ih, b_hh = (t.double() for t in (U, W, b_ih, b_hh))
    s_prev = torch.randn(B, H, dtype=torch.float64)
    cell = ElmanCell(activation)
    ux = cell.project_inputs(x[None], U, b_ih, b_hh)[0]
    s_t, state = cell.step(ux, s_prev, W.t(), b_hh)
    a = x @ U.T + s_prev @ W.T + b_ih + b_hh  # a_t = U x_t + W s_{t-1} + b
    expected = {"tanh": torch.tanh(a), "relu": torch.relu(a), "sigmoid": torch.sigmoid(a), "identity": a}[activation]
    torch.testing.assert_close(s_t, expected, rtol=1e-12, atol=1e-12)
    assert state is s_t


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_elman_step_matches_torch_rnn_cell(activation, x):
    torch.manual_seed(2)
    ref = torch.nn.RNNCell(F_IN, H, nonlinearity=activation).double()
    s_prev = torch.randn(B, H, dtype=torch.float64)
    s_t, _ = one_step(ElmanCell(activation), ref, x, s_prev)
    torch.testing.assert_close(s_t, ref(x, s_prev), rtol=1e-12, atol=1e-12)


def test_lstm_step_matches_torch_lstm_cell(x):
    torch.manual_seed(3)
    ref = torch.nn.LSTMCell(F_IN, H).double()
    h, c = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    h_t, (h_state, c_t) = one_step(LSTMCell(), ref, x, (h, c))
    h_ref, c_ref = ref(x, (h, c))
    torch.testing.assert_close(h_t, h_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_t, c_ref, rtol=1e-12, atol=1e-12)
    assert h_state is h_t


def test_lstm_gate_order_is_i_f_g_o(x):
    """A large forget-gate bias (block 2 of 4) keeps c_{t-1}: the gates are in torch's order."""
    ref = torch.nn.LSTMCell(F_IN, H).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.zero_()
        ref.bias_ih[H:2 * H] = 50.0   # f = 1
        ref.bias_ih[:H] = -50.0       # i = 0
    c = torch.randn(B, H, dtype=torch.float64)
    _, (_, c_t) = one_step(LSTMCell(), ref, x, (torch.zeros(B, H, dtype=torch.float64), c))
    torch.testing.assert_close(c_t, c)


def test_gru_step_matches_torch_gru_cell(x):
    torch.manual_seed(4)
    ref = torch.nn.GRUCell(F_IN, H).double()
    h = torch.randn(B, H, dtype=torch.float64)
    h_t, _ = one_step(GRUCell(), ref, x, h)
    torch.testing.assert_close(h_t, ref(x, h), rtol=1e-12, atol=1e-12)


def test_gru_reset_gate_multiplies_the_recurrent_bias(x):
    """PyTorch's convention: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). With r = 0, b_hn is ignored."""
    ref = torch.nn.GRUCell(F_IN, H).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.zero_()
        ref.bias_ih[:H] = -50.0          # r = 0
        ref.bias_hh[2 * H:] = 3.0        # b_hn, switched off by r
        ref.bias_ih[H:2 * H] = -50.0     # z = 0: h_t = n
    h_t, _ = one_step(GRUCell(), ref, x, torch.ones(B, H, dtype=torch.float64))
    torch.testing.assert_close(h_t, torch.zeros(B, H, dtype=torch.float64))


def test_make_cell_picks_the_family():
    assert isinstance(make_cell(CellSpec("elman", "relu")), ElmanCell)
    assert make_cell(CellSpec("elman", "sigmoid")).activation == "sigmoid"
    assert isinstance(make_cell(CellSpec("lstm")), LSTMCell)
    assert isinstance(make_cell(CellSpec("gru")), GRUCell)


def test_unknown_activation_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="cell.nonlinearity='softsign'.*tanh, relu, sigmoid, identity"):
        ElmanCell("softsign")
