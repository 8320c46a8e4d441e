"""The hand-written NumPy BPTT (rnnexp.bptt.reference) against finite differences, against torch
autograd on the same weights, and the truncated variants against their definitions."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnexp.bptt import reference as ref
from rnnexp.gradcheck import Problem, check_reference
from rnnexp.nn.recurrent import CellSpec, RecurrentEncoder
from rnnexp.nn.weights import torch_layout_module

B, F_IN, H, O = 3, 3, 4, 3
ARCHITECTURES = {"single": (1, False), "stacked": (2, False), "bidirectional": (2, True)}


# -- finite differences ------------------------------------------------------------------------------
def _fd_cases():
    """Every activation x architecture; T, loss and target placement rotate so each appears widely."""
    lengths = itertools.cycle([1, 20, 5, 13, 2, 8, 17])
    placements = itertools.cycle([("ce", "every"), ("mse", "final"), ("mse", "every"), ("ce", "final")])
    for activation, arch in itertools.product(ref.ACTIVATIONS, ARCHITECTURES):
        yield activation, arch, next(lengths), *next(placements)


@pytest.mark.parametrize("activation,arch,seq_len,loss,targets", list(_fd_cases()))
def test_reference_matches_finite_differences(activation, arch, seq_len, loss, targets):
    num_layers, bidirectional = ARCHITECTURES[arch]
    problem = Problem(seq_len=seq_len, num_layers=num_layers, bidirectional=bidirectional, loss=loss,
                      targets=targets, seed=seq_len)
    for error in check_reference(activation, problem):
        assert error.relative < 1e-6, (error.name, error.relative)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_relu_with_five_steps_where_the_seed_failed(arch, loss):
    num_layers, bidirectional = ARCHITECTURES[arch]
    problem = Problem(seq_len=5, num_layers=num_layers, bidirectional=bidirectional, loss=loss)
    errors = check_reference("relu", problem)
    assert {e.name for e in errors} >= {"U_l0", "W_l0", "b_l0", "V", "c"}  # U is checked: the tutorial had no dU
    assert max(e.relative for e in errors) < 1e-6


# -- torch autograd on the same weights --------------------------------------------------------------
def random_problem(seq_len, loss, every_step, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, seq_len, F_IN))
    steps = (B, seq_len) if every_step else (B,)
    y = rng.integers(0, O, steps) if loss == "ce" else rng.normal(size=(*steps, O))
    return x, y


def torch_twin(net: ref.ElmanNetwork, activation: str, backend: str, freeze_bias_hh: bool = False):
    """Encoder + head in float64 holding the reference's weights (bias_hh = 0, so b = bias_ih).

    freeze_bias_hh: for several SGD updates. torch's two biases each get dL/db, so a step would
    move their sum twice as far as the reference's one b.
    """
    spec = CellSpec("elman", activation)
    encoder = RecurrentEncoder(spec, F_IN, H, net.num_layers, net.bidirectional, backend=backend).double()
    head = torch.nn.Linear(encoder.output_size, O).double()
    recurrent, head_weights = net.torch_weights()
    with torch.no_grad():
        for name, p in torch_layout_module(encoder).named_parameters():
            p.copy_(torch.from_numpy(recurrent[name]))
        head.weight.copy_(torch.from_numpy(head_weights["weight"]))
        head.bias.copy_(torch.from_numpy(head_weights["bias"]))
    if freeze_bias_hh:
        for name, p in torch_layout_module(encoder).named_parameters():
            p.requires_grad_(not name.startswith("bias_hh"))
    return encoder, head


def torch_loss(encoder, head, x, y, loss, state=None):
    """The reference's loss in torch: mean over batch and scored steps (final: o_T from s_T, s'_T)."""
    outputs, _ = encoder(x, state)
    every_step = y.dim() == (2 if loss == "ce" else 3)
    prediction = head(outputs) if every_step else head(outputs[:, -1])
    if loss == "ce":
        return F.cross_entropy(prediction.reshape(-1, O), y.reshape(-1))
    return F.mse_loss(prediction, y)


def torch_gradients(encoder, head, loss_value):
    params = {**dict(torch_layout_module(encoder).named_parameters()),
              **{f"head.{n}": p for n, p in head.named_parameters()}}
    params = {n: p for n, p in params.items() if p.requires_grad}
    grads = torch.autograd.grad(loss_value, list(params.values()))
    return {n: g.numpy() for n, g in zip(params, grads)}


def assert_same_gradients(reference_grads: dict, torch_grads: dict, tol=1e-10):
    named = ref.torch_named_gradients(reference_grads)
    frozen = {n for n in named if n.startswith("bias_hh")} - torch_grads.keys()
    assert named.keys() - frozen == torch_grads.keys()
    for name, value in torch_grads.items():
        np.testing.assert_allclose(named[name], value, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("activation", ref.ACTIVATIONS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("loss,every_step", [("ce", True), ("mse", False)])
def test_full_bptt_matches_torch_autograd(activation, arch, loss, every_step):
    num_layers, bidirectional = ARCHITECTURES[arch]
    cls = ref.BidirectionalElmanNetwork if bidirectional else ref.ElmanNetwork
    net = cls(F_IN, H, O, num_layers, activation, loss, seed=7)
    x, y = random_problem(9, loss, every_step)
    state = np.random.default_rng(1).normal(size=(num_layers * net.directions, B, H))
    loss_value, grads = ref.bptt_gradients(net, x, y, initial_state=state)
    # torch's fused nn.RNN knows tanh and relu; the explicit backend also sigmoid and identity
    backend = "native" if activation in ("tanh", "relu") else "explicit"
    encoder, head = torch_twin(net, activation, backend)
    torch_value = torch_loss(encoder, head, torch.from_numpy(x), torch.from_numpy(y), loss, torch.from_numpy(state))
    assert loss_value == pytest.approx(float(torch_value.detach()), rel=1e-12)
    assert_same_gradients(grads, torch_gradients(encoder, head, torch_value))


def test_weights_load_from_torch_with_both_biases_summed():
    torch.manual_seed(0)
    encoder = RecurrentEncoder(CellSpec("elman", "tanh"), F_IN, H, 2, True).double()
    head = torch.nn.Linear(2 * H, O).double()
    net = ref.BidirectionalElmanNetwork(F_IN, H, O, 2)
    net.load_torch_weights(dict(torch_layout_module(encoder).named_parameters()), dict(head.named_parameters()))
    rnn = torch_layout_module(encoder)
    np.testing.assert_array_equal(net.layers[1][1].b, (rnn.bias_ih_l1_reverse + rnn.bias_hh_l1_reverse).detach())
    x, y = random_problem(4, "ce", True)
    loss_value, _ = ref.bptt_gradients(net, x, y)
    with torch.no_grad():
        torch_value = torch_loss(encoder, head, torch.from_numpy(x), torch.from_numpy(y), "ce")
    assert loss_value == pytest.approx(float(torch_value), rel=1e-12)


# -- the tutorial's bugs, fixed --------------------------------------------------------------------------
def test_update_changes_every_parameter():
    net = ref.ElmanNetwork(F_IN, H, O, num_layers=2, activation="relu", loss="ce", seed=3)
    x, y = random_problem(6, "ce", True)
    _, grads = ref.bptt_gradients(net, x, y)
    before = {n: p.copy() for n, p in net.params().items()}
    net.update(0.1)
    after = net.params()
    assert set(after) == {"U_l0", "W_l0", "b_l0", "U_l1", "W_l1", "b_l1", "V", "c"}
    for name in after:
        assert not np.array_equal(after[name], before[name]), name
        np.testing.assert_allclose(after[name], before[name] - 0.1 * grads[name], rtol=0, atol=1e-15)


def test_layer_update_steps_u_w_and_b():
    layer = ref.ElmanLayer(F_IN, H, "tanh", seed=0)
    layer.reset_state(B)
    for x_t in np.random.default_rng(0).normal(size=(4, B, F_IN)):
        layer.forward(x_t)
    layer.backward([np.ones((B, H))] * 4)
    before = {k: getattr(layer, k).copy() for k in ("U", "W", "b")}
    layer.update(0.5)
    for k, old in before.items():
        assert np.all(np.abs(layer.grads[k]) > 0) and not np.array_equal(getattr(layer, k), old), k


@pytest.mark.parametrize("activation", ref.ACTIVATIONS)
def test_backward_leaves_the_stored_forward_pass_untouched(activation):
    net = ref.BidirectionalElmanNetwork(F_IN, H, O, num_layers=2, activation=activation, seed=5)
    x, y = random_problem(5, "ce", True)
    net.reset_state(B)
    features = net.forward(x)
    stored = copy.deepcopy([(layer.xs, layer.pre, layer.states) for pair in net.layers for layer in pair])
    features_before = copy.deepcopy(features)
    _, dfeatures = net.out.loss_and_backward(dict(enumerate(features)), ref.scored_targets(y, 5, "ce"))
    net.backward(dfeatures, 5)
    after = [(layer.xs, layer.pre, layer.states) for pair in net.layers for layer in pair]
    for (xs0, pre0, s0), (xs1, pre1, s1) in zip(stored, after):
        for a, b in zip(xs0 + pre0 + s0, xs1 + pre1 + s1):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(features_before, features):
        np.testing.assert_array_equal(a, b)


# -- truncated BPTT and the tutorial's window --------------------------------------------------------------
def test_tbptt_windows_split_by_length_and_reach_back_k2():
    windows = ref.tbptt_windows(10, 3, 5)
    assert [(w.start, w.first, w.end) for w in windows] == [(0, 0, 3), (1, 3, 6), (4, 6, 9), (5, 9, 10)]
    assert [(w.start, w.first, w.end) for w in ref.tbptt_windows(6, 6, 6)] == [(0, 0, 6)]
    with pytest.raises(ValueError, match="k1 <= k2"):
        ref.tbptt_windows(10, 4, 3)


def torch_tbptt(encoder, head, x, y, k1, k2, lr, loss):
    """TBPTT(k1, k2) with SGD, straight from the definition, under torch autograd."""
    seq_len, every_step = x.shape[1], y.dim() == (2 if loss == "ce" else 3)
    ends = list(range(k1, seq_len, k1)) + [seq_len]
    recorded, updates = {0: None}, []
    params = [p for p in [*torch_layout_module(encoder).parameters(), *head.parameters()] if p.requires_grad]
    for j, end in enumerate(ends):
        start, first = max(0, end - k2), ends[j - 1] if j else 0
        outputs, _ = encoder(x[:, start:end], recorded[start])
        if j + 1 < len(ends):  # the next window's start state, from this pass, before the update
            at = max(0, ends[j + 1] - k2)
            with torch.no_grad():
                recorded[at] = encoder(x[:, start:at], recorded[start])[1] if at > start else recorded[start]
        if every_step:
            prediction, target = head(outputs[:, first - start:]), y[:, first:end]
        elif end == seq_len:
            prediction, target = head(outputs[:, -1]), y
        else:
            continue
        value = F.cross_entropy(prediction.reshape(-1, O), target.reshape(-1)) if loss == "ce" \
            else F.mse_loss(prediction, target)
        grads = torch_gradients(encoder, head, value)  # by name, in the order of `params`
        updates.append(grads)
        with torch.no_grad():
            for p, g in zip(params, grads.values()):
                p -= lr * torch.from_numpy(g)
    return updates


@pytest.mark.parametrize("k1,k2,num_layers,loss,every_step", [
    (3, 3, 1, "ce", True),      # chunks of k
    (2, 5, 2, "ce", True),      # k1 < k2, stacked
    (4, 4, 1, "mse", True),     # the last window is shorter (T = 10)
    (3, 4, 1, "mse", False),    # final target only: one update reaching back k2 steps
    (10, 10, 1, "ce", True),    # k1 = k2 = T
])
def test_tbptt_matches_its_definition_under_autograd(k1, k2, num_layers, loss, every_step):
    net = ref.ElmanNetwork(F_IN, H, O, num_layers, "tanh", loss, seed=11)
    x, y = random_problem(10, loss, every_step, seed=2)
    encoder, head = torch_twin(net, "tanh", "native", freeze_bias_hh=True)
    losses = []
    updates = ref.tbptt_train_sequence(net, x, y, k1, k2, lr=0.3, losses=losses)
    expected = torch_tbptt(encoder, head, torch.from_numpy(x), torch.from_numpy(y), k1, k2, 0.3, loss)
    assert len(updates) == len(expected) == len(losses) == (-(-10 // k1) if every_step else 1)
    for grads, torch_grads in zip(updates, expected):
        assert_same_gradients(grads, torch_grads)


def test_tbptt_with_k1_equal_k2_equal_t_is_full_bptt():
    net = ref.ElmanNetwork(F_IN, H, O, 2, "sigmoid", "ce", seed=4)
    x, y = random_problem(7, "ce", True)
    _, full = ref.bptt_gradients(copy.deepcopy(net), x, y)
    (only,) = ref.tbptt_train_sequence(net, x, y, 7, 7, lr=0.1)
    for name in full:
        np.testing.assert_array_equal(only[name], full[name])


def test_tbptt_final_target_reaches_back_exactly_k2_steps():
    net = ref.ElmanNetwork(F_IN, H, O, 1, "tanh", "ce", seed=6)
    x, y = random_problem(12, "ce", False)
    # by hand: the state 4 steps before the end is a constant; full BPTT over the last 4 steps
    probe = copy.deepcopy(net)
    probe.reset_state(B)
    probe.forward(x[:, :8])
    _, expected = ref.bptt_gradients(copy.deepcopy(net), x[:, 8:], y, initial_state=probe.state_after(8))
    (grads,) = ref.tbptt_train_sequence(net, x, y, k1=3, k2=4, lr=0.1)
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-13, atol=1e-15)


def test_tbptt_refuses_a_bidirectional_network():
    net = ref.BidirectionalElmanNetwork(F_IN, H, O)
    x, y = random_problem(4, "ce", True)
    with pytest.raises(ValueError, match="unidirectional"):
        ref.tbptt_train_sequence(net, x, y, 2, 2, lr=0.1)


def torch_lookback(encoder, head, x, y, k, loss):
    """The tutorial's window under autograd: each scored step's loss from the state k steps back."""
    seq_len = x.shape[1]
    every_step = y.dim() == (2 if loss == "ce" else 3)
    scored = range(seq_len) if every_step else [seq_len - 1]
    with torch.no_grad():
        states = [None] + [encoder(x[:, :t])[1] for t in range(1, seq_len + 1)]
    total = 0
    for tau in scored:
        start = max(0, tau + 1 - k)
        outputs, _ = encoder(x[:, start:tau + 1], states[start])
        prediction = head(outputs[:, -1])
        target = y[:, tau] if every_step else y
        value = F.cross_entropy(prediction, target) if loss == "ce" else F.mse_loss(prediction, target)
        total = total + value / len(scored)
    return float(total.detach()), torch_gradients(encoder, head, total)


@pytest.mark.parametrize("k,num_layers,loss,every_step", [(3, 1, "ce", True), (2, 2, "mse", True),
                                                          (4, 1, "ce", False), (20, 1, "ce", True)])
def test_lookback_matches_its_definition_under_autograd(k, num_layers, loss, every_step):
    net = ref.ElmanNetwork(F_IN, H, O, num_layers, "relu", loss, seed=9)
    x, y = random_problem(8, loss, every_step, seed=3)
    encoder, head = torch_twin(net, "relu", "native")
    loss_value, grads = ref.lookback_gradients(net, x, y, k)
    torch_value, torch_grads = torch_lookback(encoder, head, torch.from_numpy(x), torch.from_numpy(y), k, loss)
    assert loss_value == pytest.approx(torch_value, rel=1e-12)
    assert_same_gradients(grads, torch_grads)
    if k >= 8:  # a window as long as the sequence is full BPTT
        _, full = ref.bptt_gradients(net, x, y)
        for name in full:
            np.testing.assert_allclose(grads[name], full[name], rtol=1e-12, atol=1e-15)


def test_lookback_sets_the_update():
    net = ref.ElmanNetwork(F_IN, H, O, 1, "tanh", "ce", seed=2)
    x, y = random_problem(6, "ce", True)
    _, grads = ref.lookback_gradients(net, x, y, k=2)
    before = net.params()["U_l0"].copy()
    net.update(0.2)
    np.testing.assert_allclose(net.params()["U_l0"], before - 0.2 * grads["U_l0"], atol=1e-15)
