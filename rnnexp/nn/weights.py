"""Copy recurrent weights between the native backend and its explicit twin.

Both expose torch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), so a copy is a
name-by-name assignment; what this module adds is finding the named module inside whatever it is
given (a `RecurrentEncoder`, its `.core`, or a bare nn.RNN/LSTM/GRU) and refusing a mismatch
with a message that names the parameter.
"""

from __future__ import annotations

import torch
from torch import nn


def torch_layout_module(module: nn.Module) -> nn.Module:
    """The module that owns the `weight_ih_l0`-style parameters."""
    from rnnexp.nn.explicit import ExplicitRecurrent
    from rnnexp.nn.recurrent import NativeRecurrent, RecurrentEncoder

    if isinstance(module, RecurrentEncoder):
        module = module.core
    if isinstance(module, NativeRecurrent):
        module = module.rnn
    if isinstance(module, (ExplicitRecurrent, nn.RNNBase)):
        return module
    raise TypeError(f"expected a RecurrentEncoder, its .core, or an nn.RNN/LSTM/GRU; got {type(module).__name__}")


@torch.no_grad()
def copy_recurrent_weights(source: nn.Module, target: nn.Module) -> None:
    """target.<name> <- source.<name> for every recurrent parameter (dtype and device of target kept)."""
    src = dict(torch_layout_module(source).named_parameters())
    dst = dict(torch_layout_module(target).named_parameters())
    if src.keys() != dst.keys():
        missing, extra = sorted(dst.keys() - src.keys()), sorted(src.keys() - dst.keys())
        raise ValueError(f"the two modules have different parameters (cell, depth or direction differ): "
                         f"only in target {missing}, only in source {extra}")
    for name, p in dst.items():
        if p.shape != src[name].shape:
            raise ValueError(f"{name}: source shape {tuple(src[name].shape)} != target shape {tuple(p.shape)}")
        p.copy_(src[name])


def copy_native_to_explicit(native: nn.Module, explicit: nn.Module) -> None:
    copy_recurrent_weights(native, explicit)


def copy_explicit_to_native(explicit: nn.Module, native: nn.Module) -> None:
    copy_recurrent_weights(explicit, native)
    rnn = torch_layout_module(native)
    if hasattr(rnn, "flatten_parameters"):
        rnn.flatten_parameters()  # cuDNN keeps one flat weight buffer; rebuild it after an in-place copy
