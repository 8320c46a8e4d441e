"""The explicit backend: the cells of `rnnexp.nn.cells` stacked and run in both directions.

`ExplicitRecurrent` is a drop-in for nn.RNN / nn.LSTM / nn.GRU (batch_first=True): the same
forward contract (see `rnnexp.nn.recurrent`) and the same parameter names and shapes
(`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `..._reverse`), so a state_dict
loads into either backend and `initialize_recurrent_weights` serves both.

Speed. Per layer and direction the input projection of all T steps is one matmul, so the loop
does one addmm (W s_{t-1}) and the gate math per step. `compile()` compiles the loop over a chunk
of steps (`compile_chunk`: all 28 rows of an image, or 28 of its 784 pixels): Inductor then fuses
each step's gate math into one kernel, forward and backward. Compiling only the step costs a
guard check and an autograd-function call per step, which ate the gain (measured 1.9x native
against 1.5x eager); compiling the whole unrolled sequence makes compile time grow with T.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnexp.nn.cells import make_cell


class ExplicitRecurrent(nn.Module):
    def __init__(self, spec, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.spec = spec
        self.cell = make_cell(spec)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.batch_first = True
        self._scan = scan  # compile() swaps in a compiled one
        self.chunked = False  # scan `compile_chunk(T)` steps per call rather than all T (compile() sets it)

        gates = self.cell.num_gates * hidden_size
        # Registration order is torch's (layer, direction, then ih/hh weights and biases), so
        # parameters() lines up one to one with nn.LSTM's and optimiser states transfer too.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes(layer):
                self.register_parameter(f"weight_ih{suffix}", nn.Parameter(torch.empty(gates, layer_input)))
                self.register_parameter(f"weight_hh{suffix}", nn.Parameter(torch.empty(gates, hidden_size)))
                self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(gates)))
                self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(gates)))
        self.reset_parameters()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def reset_parameters(self) -> None:
        # torch's RNN default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def compile(self, *args, **kwargs) -> None:
        """Compile the recurrence in place (arguments are torch.compile's); see the module docstring.

        Parameter names, and so checkpoints, do not change.
        """
        if "mode" not in kwargs:  # torch.compile takes a mode or options, not both
            # Inductor's vectorised tanh costs about twice its exp on CPU; written with exp it
            # halves the fused gate kernel of an LSTM step (measured: 2-thread Xeon, T=28, B=128).
            kwargs["options"] = {"cpp.use_decompose_tanh": True, **kwargs.get("options", {})}
        self._scan = torch.compile(scan, *args, **kwargs)
        self.chunked = True

    def extra_repr(self) -> str:
        return (f"{self.spec.family}({self.spec.nonlinearity}), {self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, dropout={self.dropout}")

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state=None):
        """x [B, T, F] -> outputs [B, T, D*H], state h [L*D, B, H] (LSTM: (h, c)); torch's layout."""
        batch = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros, zeros) if self.cell.has_cell_state else zeros
        finals = []  # per layer * direction, in torch's order
        # Time-major inside ([T, B, F]): every step's slice of a projection is then one contiguous
        # block, which addmm adds as it is instead of copying a strided one first.
        layer_input = x.transpose(0, 1)
        for layer in range(self.num_layers):
            outputs = []
            for direction, suffix in enumerate(self._suffixes(layer)):
                index = layer * self.num_directions + direction
                s0 = (state[0][index], state[1][index]) if self.cell.has_cell_state else state[index]
                sequence, final = self._run_direction(layer_input, s0, suffix, reverse=direction == 1)
                outputs.append(sequence)
                finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)  # between layers only
        layer_input = layer_input.transpose(0, 1)  # batch first, as nn.LSTM(batch_first=True) returns it
        if self.cell.has_cell_state:
            return layer_input, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return layer_input, torch.stack(finals)

    def _run_direction(self, x, s0, suffix: str, reverse: bool):
        """One layer, one direction: [T, B, F] -> ([T, B, H], final state)."""
        U, W = getattr(self, f"weight_ih{suffix}"), getattr(self, f"weight_hh{suffix}")
        b_ih, b_hh = getattr(self, f"bias_ih{suffix}"), getattr(self, f"bias_hh{suffix}")
        ux = self.cell.project_inputs(x, U, b_ih, b_hh)  # all T input projections, one matmul
        W_t = W.t()
        # split, not slicing: its backward is one cat, where each slice's would fill a zero
        # tensor the size of the whole projection
        chunks = ux.split(compile_chunk(len(ux)) if self.chunked else len(ux))
        state, outputs = s0, [None] * len(chunks)
        if self.chunked:
            # One graph for every batch size (the last batch of an epoch, evaluation batches):
            # without this each new size recompiles, and past 8 graphs dynamo falls back to eager.
            for tensor in (*chunks, *(state if isinstance(state, tuple) else (state,))):
                torch._dynamo.maybe_mark_dynamic(tensor, 1 if tensor.dim() == 3 else 0)
        for i in (range(len(chunks) - 1, -1, -1) if reverse else range(len(chunks))):
            outputs[i], state = self._scan(self.cell, chunks[i], state, W_t, b_hh, reverse)
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), state


def compile_chunk(seq_len: int, longest: int = 32) -> int:
    """Steps per compiled call: the largest divisor of T up to `longest`, so that one graph
    serves every chunk (T = 28 rows: 28; T = 784 pixels: 28); where T has none worth having
    (a prime above `longest`), `longest`, at the cost of a second graph for the remainder."""
    if seq_len <= longest:
        return seq_len
    best = max(d for d in range(1, longest + 1) if seq_len % d == 0)
    return best if best >= longest // 2 else longest


def scan(cell, ux: torch.Tensor, state, W_t: torch.Tensor, b_hh: torch.Tensor, reverse: bool):
    """Run `cell` over the steps of ux [T, B, G*H] (backwards if `reverse`) -> ([T, B, H], state)."""
    # unbind once, not ux[t] per step: its backward is one stack, where each select's would
    # fill a zero tensor of the whole [T, B, G*H]
    steps = ux.unbind(0)
    hs = [None] * len(steps)
    for t in (range(len(steps) - 1, -1, -1) if reverse else range(len(steps))):
        hs[t], state = cell.step(steps[t], state, W_t, b_hh)
    return torch.stack(hs), state
