"""The recurrent encoder: one cell family, stacked `num_layers` deep, one or two directions.

Every backend (torch's fused `nn.RNN`/`nn.LSTM`/`nn.GRU`, or the explicit cells of
`rnnexp.nn.cells`) honours the same contract so the LightningModule never asks which
one it holds:

    outputs, state = encoder(x, state=None)
      x        [B, T, input_size]
      outputs  [B, T, D * hidden_size]   top layer, directions concatenated (forward first)
      state    torch's layout: h [L * D, B, H] (LSTM: a tuple (h, c)); index = layer * D + direction

`readout` turns that pair into one vector per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rnnexp.choices import BACKENDS, CELL_NAMES, READOUTS  # noqa: F401  (re-exported)

ELMAN_NONLINEARITIES = ("tanh", "relu")

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CellSpec:
    """What a cell computes, independent of who computes it.

    family:          "elman" | "lstm" | "gru"
    nonlinearity:    f in s_t = f(U x_t + W s_{t-1} + b) for Elman cells ("none" otherwise)
    forget_bias:     initial value of the LSTM forget-gate bias (TensorFlow's BasicLSTMCell adds 1.0)
    recurrent_init:  "default" (torch's uniform) | "identity" (IRNN, Le et al. 2015) | "orthogonal"
    """

    family: str
    nonlinearity: str = "none"
    forget_bias: float = 0.0
    recurrent_init: str = "default"

    @property
    def num_gates(self) -> int:
        return {"elman": 1, "lstm": 4, "gru": 3}[self.family]

    @property
    def has_cell_state(self) -> bool:
        return self.family == "lstm"


def cell_spec_from_config(cell_cfg) -> CellSpec:
    """Build a CellSpec from the `cell` config node (conf/cell/*.yaml)."""
    name = str(cell_cfg.name)
    if name not in CELL_NAMES:
        from rnnexp.errors import ConfigError

        raise ConfigError("cell.name", name, CELL_NAMES, hint="pick a file from conf/cell/, e.g. cell=gru")
    family = {"rnn": "elman", "irnn": "elman", "lstm": "lstm", "gru": "gru"}[name]
    return CellSpec(
        family=family,
        nonlinearity=str(cell_cfg.nonlinearity),
        forget_bias=float(cell_cfg.forget_bias),
        recurrent_init=str(cell_cfg.recurrent_init),
    )


def detach_state(state: State | None) -> State | None:
    """Cut the graph at a state: truncated BPTT stops back-propagation here."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def top_layer_final(state: State, num_layers: int, bidirectional: bool) -> torch.Tensor:
    """The top layer's final hidden state(s), directions concatenated: [B, D * H].

    For the backward direction "final" means after it has read step 1.
    """
    h = state[0] if isinstance(state, tuple) else state
    directions = 2 if bidirectional else 1
    top = h[(num_layers - 1) * directions : num_layers * directions]  # [D, B, H]
    return torch.cat(list(top), dim=-1)


class NativeRecurrent(nn.Module):
    """torch's fused implementation (cuDNN on GPU, oneDNN/ATen on CPU)."""

    def __init__(self, spec: CellSpec, input_size: int, hidden_size: int, num_layers: int,
                 bidirectional: bool, dropout: float):
        super().__init__()
        kwargs = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                      bidirectional=bidirectional, dropout=dropout, batch_first=True)
        if spec.family == "elman":
            self.rnn = nn.RNN(nonlinearity=spec.nonlinearity, **kwargs)
        elif spec.family == "lstm":
            self.rnn = nn.LSTM(**kwargs)
        else:
            self.rnn = nn.GRU(**kwargs)
        self.spec = spec
        initialize_recurrent_weights(self.rnn, spec)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self.rnn(x, state)


def initialize_recurrent_weights(rnn: nn.RNNBase, spec: CellSpec) -> None:
    """Apply the cell's initialisation to a torch-layout module (weight_hh_l{k}, bias_ih_l{k}, ...).

    Explicit-backend modules expose the same parameter names, so this serves both.
    """
    hidden = rnn.hidden_size
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if spec.recurrent_init == "identity" and name.startswith("weight_hh"):
                # IRNN: W = I, so at init a ReLU network copies its state forward unchanged.
                p.copy_(torch.eye(hidden, dtype=p.dtype))
            elif spec.recurrent_init == "identity" and name.startswith("weight_ih"):
                nn.init.normal_(p, std=0.001)
            elif spec.recurrent_init == "identity" and name.startswith("bias"):
                p.zero_()
            elif spec.recurrent_init == "orthogonal" and name.startswith("weight_hh"):
                for gate in p.split(hidden, dim=0):
                    nn.init.orthogonal_(gate)
            if spec.family == "lstm" and name.startswith("bias"):
                # Gate order i, f, g, o. torch adds two biases (b_ih + b_hh); we put the whole
                # forget bias on b_ih and zero b_hh's share, so the sum starts at forget_bias.
                # Unlike TensorFlow's constant offset this starts there and stays trainable.
                forget = p[hidden : 2 * hidden]
                forget.fill_(spec.forget_bias if name.startswith("bias_ih") else 0.0)


class RecurrentEncoder(nn.Module):
    """cell x direction x depth x backend, behind one forward signature (see module docstring)."""

    def __init__(self, spec: CellSpec, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, backend: str = "native"):
        super().__init__()
        self.spec = spec
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.backend = backend
        if backend == "native":
            self.core = NativeRecurrent(spec, input_size, hidden_size, num_layers, bidirectional, dropout)
        elif backend == "explicit":
            from rnnexp.nn.explicit import ExplicitRecurrent

            self.core = ExplicitRecurrent(spec, input_size, hidden_size, num_layers, bidirectional, dropout)
            initialize_recurrent_weights(self.core, spec)
        else:
            from rnnexp.errors import ConfigError

            raise ConfigError("model.backend", backend, BACKENDS)

    @property
    def output_size(self) -> int:
        return self.hidden_size * (2 if self.bidirectional else 1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self.core(x, state)


def readout(outputs: torch.Tensor, state: State, kind: str, num_layers: int, bidirectional: bool) -> torch.Tensor:
    """One vector per sequence from the encoder's outputs and final state.

    final_state:  each direction's final state: forward after step T, backward after step 1.
    last_output:  the top layer's output at position T (what the TensorFlow examples read;
                  for a bidirectional encoder its backward half has seen only step T).
    mean_output:  the top layer's outputs averaged over time.
    For a unidirectional encoder final_state and last_output are the same vector.
    """
    if kind == "final_state":
        return top_layer_final(state, num_layers, bidirectional)
    if kind == "last_output":
        return outputs[:, -1]
    if kind == "mean_output":
        return outputs.mean(dim=1)
    from rnnexp.errors import ConfigError

    raise ConfigError("model.readout", kind, READOUTS)
