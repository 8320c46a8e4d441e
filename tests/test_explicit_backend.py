"""The explicit backend is the native one written out: same weights -> same numbers.

Every cell x direction x depth, float64 and float32, with a non-zero initial state: outputs, final
state and the gradient of every parameter agree with torch's fused nn.RNN/LSTM/GRU.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnexp.nn.explicit import ExplicitRecurrent, compile_chunk
from rnnexp.nn.recurrent import CellSpec, RecurrentEncoder
from rnnexp.nn.weights import copy_explicit_to_native, copy_native_to_explicit
from rnnexp.training import train

CELLS = {
    "rnn": CellSpec("elman", "tanh"),
    "irnn": CellSpec("elman", "relu", recurrent_init="identity"),
    "lstm": CellSpec("lstm", forget_bias=1.0),
    "gru": CellSpec("gru"),
}
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
B, T, F_IN, H = 3, 6, 4, 5


def twins(spec, num_layers, bidirectional, dtype, dropout=0.0):
    torch.manual_seed(0)
    native = RecurrentEncoder(spec, F_IN, H, num_layers, bidirectional, dropout, backend="native").to(dtype)
    explicit = RecurrentEncoder(spec, F_IN, H, num_layers, bidirectional, dropout, backend="explicit").to(dtype)
    with torch.no_grad():  # random weights rather than the init: IRNN's W = I would hide bugs
        for p in native.parameters():
            p.uniform_(-0.6, 0.6)
    copy_native_to_explicit(native, explicit)
    return native, explicit


def random_state(spec, num_layers, bidirectional, dtype):
    shape = (num_layers * (2 if bidirectional else 1), B, H)
    h = torch.randn(shape, dtype=dtype)
    return (h, torch.randn(shape, dtype=dtype)) if spec.has_cell_state else h


def run(encoder, x, state):
    outputs, final = encoder(x, state)
    finals = final if isinstance(final, tuple) else (final,)
    # a loss that reaches every output and every final state, with uneven weights
    loss = (outputs * torch.linspace(-1, 1, outputs.shape[-1], dtype=x.dtype)).sin().sum()
    loss = loss + sum((f ** 2).sum() * 0.3 for f in finals)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in encoder.core.named_parameters()} if encoder.backend == "explicit" \
        else {n: p.grad.clone() for n, p in encoder.core.rnn.named_parameters()}
    return outputs.detach(), [f.detach() for f in finals], grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell,bidirectional,num_layers",
                         list(itertools.product(CELLS, [False, True], [1, 2])))
def test_explicit_matches_native_outputs_state_and_gradients(cell, bidirectional, num_layers, dtype):
    spec = CELLS[cell]
    native, explicit = twins(spec, num_layers, bidirectional, dtype)
    torch.manual_seed(1)
    x = torch.randn(B, T, F_IN, dtype=dtype)
    state = random_state(spec, num_layers, bidirectional, dtype)
    out_n, final_n, grads_n = run(native, x, state)
    out_e, final_e, grads_e = run(explicit, x, state)
    tol = TOLERANCE[dtype]
    assert out_e.shape == (B, T, H * (2 if bidirectional else 1))
    torch.testing.assert_close(out_e, out_n, rtol=tol, atol=tol)
    for fe, fn in zip(final_e, final_n):
        torch.testing.assert_close(fe, fn, rtol=tol, atol=tol)
    assert grads_e.keys() == grads_n.keys()
    for name in grads_n:
        torch.testing.assert_close(grads_e[name], grads_n[name], rtol=tol, atol=tol, msg=name)


def test_zero_initial_state_is_the_default():
    native, explicit = twins(CELLS["lstm"], 2, True, torch.float64)
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    out_n, (h_n, c_n) = native(x)
    out_e, (h_e, c_e) = explicit(x)
    for e, n in ((out_e, out_n), (h_e, h_n), (c_e, c_n)):
        torch.testing.assert_close(e, n, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunked_scan_as_compiled_matches_native(cell):
    """compile() scans chunks of steps (T = 40: two of 20); checked here in eager mode."""
    native, explicit = twins(CELLS[cell], 2, True, torch.float64)
    explicit.core.chunked = True
    x = torch.randn(B, 40, F_IN, dtype=torch.float64)
    state = random_state(CELLS[cell], 2, True, torch.float64)
    out_n, final_n, grads_n = run(native, x, state)
    out_e, final_e, grads_e = run(explicit, x, state)
    torch.testing.assert_close(out_e, out_n, rtol=1e-10, atol=1e-10)
    for fe, fn in zip(final_e, final_n):
        torch.testing.assert_close(fe, fn, rtol=1e-10, atol=1e-10)
    for name in grads_n:
        torch.testing.assert_close(grads_e[name], grads_n[name], rtol=1e-10, atol=1e-10, msg=name)


def test_compile_chunks_divide_the_sequence():
    assert [compile_chunk(t) for t in (1, 28, 40, 784, 37)] == [1, 28, 20, 28, 32]


def test_parameter_names_and_state_dicts_are_interchangeable():
    for spec in CELLS.values():
        native, explicit = twins(spec, 2, True, torch.float64)
        names_n = [n for n, _ in native.core.rnn.named_parameters()]
        names_e = [n for n, _ in explicit.core.named_parameters()]
        assert names_e == names_n  # same names in the same order: optimiser states line up too
        fresh = RecurrentEncoder(spec, F_IN, H, 2, True, backend="explicit").double()
        fresh.core.load_state_dict(native.core.rnn.state_dict())
        for n, p in fresh.core.named_parameters():
            assert torch.equal(p, getattr(native.core.rnn, n))


def test_copy_explicit_to_native_round_trip():
    native, explicit = twins(CELLS["gru"], 2, False, torch.float64)
    with torch.no_grad():
        explicit.core.weight_hh_l1.add_(1.0)
    copy_explicit_to_native(explicit.core, native)
    assert torch.equal(native.core.rnn.weight_hh_l1, explicit.core.weight_hh_l1)


def test_copy_refuses_a_different_architecture():
    native, _ = twins(CELLS["lstm"], 1, False, torch.float64)
    _, explicit = twins(CELLS["lstm"], 2, False, torch.float64)
    with pytest.raises(ValueError, match="weight_ih_l1"):
        copy_native_to_explicit(native, explicit)


def test_initialization_applies_to_explicit_parameters():
    explicit = RecurrentEncoder(CELLS["irnn"], F_IN, H, 2, True, backend="explicit")
    assert torch.equal(explicit.core.weight_hh_l1_reverse.detach(), torch.eye(H))
    lstm = RecurrentEncoder(CELLS["lstm"], F_IN, H, backend="explicit")
    assert torch.all(lstm.core.bias_ih_l0[H:2 * H] == 1.0) and torch.all(lstm.core.bias_hh_l0[H:2 * H] == 0.0)
    # the rest keeps torch's default U(-1/sqrt(H), 1/sqrt(H))
    assert lstm.core.weight_hh_l0.abs().max() <= H ** -0.5


def test_dropout_acts_between_layers_only_and_only_in_training():
    _, explicit = twins(CELLS["rnn"], 2, False, torch.float64, dropout=0.5)
    x = torch.randn(B, T, F_IN, dtype=torch.float64)
    explicit.eval()
    assert torch.equal(explicit(x)[0], explicit(x)[0])
    explicit.train()
    torch.manual_seed(3)
    first = explicit(x)[0]
    torch.manual_seed(4)
    assert not torch.equal(first, explicit(x)[0])
    single = ExplicitRecurrent(CELLS["rnn"], F_IN, H, num_layers=1, dropout=0.5).double()
    single.train()
    assert torch.equal(single(x)[0], single(x)[0])  # nothing between layers to drop


def test_explicit_backend_learns_sequence_mnist(make_cfg):
    record = train(make_cfg(["model.backend=explicit", "model.hidden_size=64", "optimizer.lr=0.005",
                             "data.limit_train_samples=2048", "trainer.limit_train_batches=32"]))
    assert record["status"] == "completed"
    assert record["metrics"]["test/acc"] > 0.5  # chance is 0.1
