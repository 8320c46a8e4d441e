"""The recurrent cells written out, one equation per line, in the tutorial's symbols.

    x_t      input at step t                    [B, F]
    s_t      state after step t                 [B, H]   (h_t for LSTM and GRU; LSTM also has c_t)
    U        input weights   (torch: weight_ih)  [G*H, F]   G = number of gates
    W        recurrent weights (torch: weight_hh) [G*H, H]
    b        biases (torch keeps two, b_ih and b_hh; only the GRU's candidate uses them apart)

A cell does not own parameters: the layer (`rnnexp.nn.explicit.ExplicitRecurrent`) holds them
under torch's names, so checkpoints and initialisation are shared with the native backend.
A cell does two things:

    project_inputs(x, U, b_ih, b_hh) -> [T, B, G*H]      U x_t + (input-side bias) for ALL steps
                                                          (x time-major: [T, B, F])
    step(ux_t, state, W_t, b_hh)     -> (s_t, state_t)   one step of the recurrence

The input projection does not depend on the state, so it is one [B*T, F] x [F, G*H] matmul
instead of T small ones; only W s_{t-1} is left inside the loop. `W_t` is W transposed once per
sequence (addmm wants [H, G*H]). Gate order and the GRU's reset-gate placement are torch's, so the
same weights give the same numbers as nn.LSTM / nn.GRU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ELMAN_ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")

_ACTIVATION = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda a: a}


def _folded_projection(x: torch.Tensor, U: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor):
    # b_ih + b_hh always appear summed, so both go into the one big matmul; autograd hands each
    # the same gradient, exactly as for torch's two biases.
    return F.linear(x, U, b_ih + b_hh)


class ElmanCell:
    """s_t = f(U x_t + W s_{t-1} + b),  f in tanh | relu | sigmoid | identity."""

    num_gates = 1
    has_cell_state = False

    def __init__(self, activation: str = "tanh"):
        if activation not in _ACTIVATION:
            from rnnexp.errors import ConfigError

            raise ConfigError("cell.nonlinearity", activation, ELMAN_ACTIVATIONS)
        self.activation = activation
        self.f = _ACTIVATION[activation]

    def project_inputs(self, x, U, b_ih, b_hh):
        return _folded_projection(x, U, b_ih, b_hh)  # U x_t + b

    def step(self, ux_t, s, W_t, b_hh):
        s = self.f(torch.addmm(ux_t, s, W_t))  # s_t = f(U x_t + b + W s_{t-1})
        return s, s


class LSTMCell:
    """Hochreiter & Schmidhuber's cell with a forget gate, gates in torch's order i, f, g, o:

        i_t = sigmoid(U_i x_t + W_i h_{t-1} + b_i)      input gate
        f_t = sigmoid(U_f x_t + W_f h_{t-1} + b_f)      forget gate (its bias starts at cell.forget_bias)
        g_t = tanh   (U_g x_t + W_g h_{t-1} + b_g)      candidate
        o_t = sigmoid(U_o x_t + W_o h_{t-1} + b_o)      output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)
    """

    num_gates = 4
    has_cell_state = True

    def project_inputs(self, x, U, b_ih, b_hh):
        return _folded_projection(x, U, b_ih, b_hh)  # U x_t + b for all four gates at once

    def step(self, ux_t, state, W_t, b_hh):
        h, c = state
        a_i, a_f, a_g, a_o = torch.addmm(ux_t, h, W_t).chunk(4, dim=1)  # U x_t + W h_{t-1} + b
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, (h, c)


class GRUCell:
    """Cho et al.'s gated recurrent unit in PyTorch's convention (gates r, z, n):

        r_t = sigmoid(U_r x_t + b_ir + W_r h_{t-1} + b_hr)         reset gate
        z_t = sigmoid(U_z x_t + b_iz + W_z h_{t-1} + b_hz)         update gate
        n_t = tanh   (U_n x_t + b_in + r_t * (W_n h_{t-1} + b_hn)) candidate: r_t gates W_n h + b_hn
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    The reset gate multiplies W_n h_{t-1} + b_hn (not h_{t-1} itself, as in the original paper),
    so b_hn cannot be folded into the input projection.
    """

    num_gates = 3
    has_cell_state = False

    def project_inputs(self, x, U, b_ih, b_hh):
        return F.linear(x, U, b_ih)  # U x_t + b_i for r, z, n

    def step(self, ux_t, h, W_t, b_hh):
        wh = torch.addmm(b_hh, h, W_t)  # W h_{t-1} + b_h for r, z, n
        ux_r, ux_z, ux_n = ux_t.chunk(3, dim=1)
        wh_r, wh_z, wh_n = wh.chunk(3, dim=1)
        r = torch.sigmoid(ux_r + wh_r)
        z = torch.sigmoid(ux_z + wh_z)
        n = torch.tanh(ux_n + r * wh_n)
        h = n + z * (h - n)  # = (1 - z) n + z h_{t-1}, one op fewer
        return h, h


def make_cell(spec) -> ElmanCell | LSTMCell | GRUCell:
    """The explicit cell for a `CellSpec` (rnnexp.nn.recurrent)."""
    if spec.family == "elman":
        return ElmanCell(spec.nonlinearity)
    if spec.family == "lstm":
        return LSTMCell()
    if spec.family == "gru":
        return GRUCell()
    from rnnexp.errors import ConfigError

    raise ConfigError("cell.family", spec.family, ("elman", "lstm", "gru"))


def layer_weights(module: torch.nn.Module, layer: int, reverse: bool = False):
    """(U, W, b_ih, b_hh) of one layer and direction of a module that names its parameters as torch
    does: weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (suffix _reverse for the backward
    direction). nn.RNN / nn.LSTM / nn.GRU and ExplicitRecurrent do, as does any module holding one
    (found by the end of the parameter's name). The parameters themselves, not copies: a cell run
    with them computes the layer's function, and gradients reach the layer's weights.

        U, W, b_ih, b_hh = layer_weights(module, k)
        ux = cell.project_inputs(x, U, b_ih, b_hh)                 U x_t + b for all steps, x [T, B, F]
        s_t, state_t = cell.step(ux[t], state_{t-1}, W.t(), b_hh)  one step of layer k
    """
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    params = dict(module.named_parameters())

    def find(name: str) -> torch.Tensor:
        matches = [p for key, p in params.items() if key == name or key.endswith("." + name)]
        if len(matches) != 1:
            raise LookupError(f"{type(module).__name__} has {len(matches)} parameters named {name}, not one")
        return matches[0]

    U, W = find(f"weight_ih{suffix}"), find(f"weight_hh{suffix}")
    b_ih, b_hh = find(f"bias_ih{suffix}"), find(f"bias_hh{suffix}")
    return U, W, b_ih, b_hh
