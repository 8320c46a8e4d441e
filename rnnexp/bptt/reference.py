"""Backpropagation through time written out by hand in NumPy: the oracle for every gradient.

The tutorial's Elman layer, batched and corrected. Symbols (one layer; a stack feeds s^{l-1}_t in as x_t):

    a_t = U x_t + W s_{t-1} + b          U [H, F], W [H, H], b [H]       x_t [B, F], s_t [B, H]
    s_t = f(a_t)                         f in tanh | relu | sigmoid | identity
    o_t = g(V s_t + c)                   V [O, H], c [O]; g = softmax (loss "ce") or identity ("mse")
    bidirectional: o_t = g(V s_t + V' s'_t + c), s' read backwards; V here is [V | V'] of shape [O, 2H]

    loss of one update = mean over the batch and the scored steps of that update of
        "ce":  -log o_t[d_t]                         (= torch's F.cross_entropy, mean reduction)
        "mse": mean over outputs of (o_t - d_t)^2     (= torch's F.mse_loss, mean reduction)

    backward, for t = T .. 1 (delta_t = dL/da_t; dL/ds_t = what o_t sends down + W^T delta_{t+1}):
        delta_t = (dL/ds_t) * f'(a_t)
        dU += delta_t^T x_t     dW += delta_t^T s_{t-1}     db += sum_batch delta_t
        dL/dx_t = delta_t U     (what a stacked layer below receives)

The tutorial's three bugs and where they are fixed: its update() changed W but not U (here
`ElmanLayer.update` steps U, W and b, and the networks also V and c); it computed no gradient for U
(`dU` above); its backward overwrote the stored states with f'(.) (here f' is computed from the
stored pre-activations into new arrays; stored states are never written after `forward`).

API (x is [B, T, F], batch first like torch; steps are numbered 0..T-1 in Python indexing):

    layer = ElmanLayer(input_size, hidden_size, activation="tanh", seed=0)
        layer.reset_state(batch_size, s0=None); s_t = layer.forward(x_t); dx = layer.backward(ds)
        layer.grads -> {"U", "W", "b"}; layer.update(lr)
    net = ElmanNetwork(input_size, hidden_size, output_size, num_layers=1, activation="tanh",
                       loss="ce", seed=0)                       # stacked, one direction
    net = BidirectionalElmanNetwork(...same arguments...)        # stacked, two directions
        net.params() -> {"U_l0", "W_l0", "b_l0", ["U_l0_reverse", ...], "V", "c"}  (live arrays)
        net.gradients() (same keys), net.update(lr), net.set_gradients(grads)
        net.load_torch_weights(recurrent, head)  recurrent: {"weight_ih_l0": ..., ...} (torch tensors
            or arrays), b = bias_ih + bias_hh; head: {"weight": V, "bias": c}
        net.torch_weights() -> (recurrent, head) in torch's names (bias_hh = 0)
    targets: "ce": int array [B, T] (every step) or [B] (final step only);
             "mse": array [B, T, O] (every step) or [B, O] (final step only);
             or a dict {step: target [B] / [B, O]} for any set of scored steps.

    bptt_gradients(net, x, targets, initial_state=None) -> (loss, grads)         full BPTT
    lookback_gradients(net, x, targets, k, initial_state=None) -> (loss, grads)
    tbptt_windows(seq_len, k1, k2) -> [Window(start, first, end)]
    tbptt_train_sequence(net, x, targets, k1, k2, lr, initial_state=None, losses=None) -> [grads]
    torch_named_gradients(grads, encoder_prefix="", head_prefix="head.") -> {torch name: array}
initial_state is torch's layout [L * D, B, H]. Gradients are dicts of new arrays, keyed as params().

Weights in torch: U = weight_ih_l0 [H, F], W = weight_hh_l0 [H, H], b = bias_ih_l0 + bias_hh_l0,
V = head.weight [O, D*H], c = head.bias. torch's two biases each receive dL/db, so one SGD step moves
their sum by 2 lr dL/db where the reference moves b by lr dL/db: to compare more than one update,
zero bias_hh and freeze it (`bias_hh_l0.requires_grad_(False)`) on the torch side.

Truncated BPTT(k1, k2), k2 >= k1 >= 1 (DESIGN.md), exactly: the sequence is cut into windows of k1
steps (`split(k1)`: the last may be shorter). A window scoring steps first..end-1 restarts from the
state after `start = max(0, end - k2)` steps, as recorded during the previous window's forward pass
(the initial state when start = 0), re-runs steps start..end-1 with the current parameters,
back-propagates the loss of its own scored steps through those steps only (the start state is a
constant) and, if it scored any step, takes one SGD step p -= lr * grad. A window without scored
steps (all but the last of a final-target task) only advances the state. k1 = k2 = T is full BPTT.

lookback(k): the tutorial's variant. One update per sequence, all computed with the parameters at
the start of the sequence; the loss at step tau back-propagates through steps tau-k+1 .. tau only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("tanh", "relu", "sigmoid", "identity")
LOSSES = ("ce", "mse")


def _activate(name: str, a: np.ndarray) -> np.ndarray:
    if name == "tanh":
        return np.tanh(a)
    if name == "relu":
        return np.maximum(a, 0.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-a))
    return a.copy()  # identity; a copy so that s_t and a_t never share memory


def _derivative(name: str, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """f'(a_t), from the stored a_t and s_t = f(a_t); always a new array."""
    if name == "tanh":
        return 1.0 - s * s
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "sigmoid":
        return s * (1.0 - s)
    return np.ones_like(a)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, read without importing torch
        value = value.detach().cpu().numpy()
    return np.array(value, dtype=np.float64)


class ElmanLayer:
    """s_t = f(U x_t + W s_{t-1} + b), one step per `forward` call, as in the tutorial."""

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh", seed=0):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not valid; allowed: {', '.join(ACTIVATIONS)}")
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)  # torch's default range, so magnitudes are familiar
        self.U = rng.uniform(-bound, bound, (hidden_size, input_size))
        self.W = rng.uniform(-bound, bound, (hidden_size, hidden_size))
        self.b = rng.uniform(-bound, bound, hidden_size)
        self.activation = activation
        self.grads: dict[str, np.ndarray] = {}
        self.reset_state(1)

    @property
    def hidden_size(self) -> int:
        return self.W.shape[0]

    def reset_state(self, batch_size: int, s0=None) -> None:
        """Forget the stored sequence; the next `forward` starts from s0 (zeros by default)."""
        s0 = np.zeros((batch_size, self.hidden_size)) if s0 is None else _numpy(s0)
        self.xs: list[np.ndarray] = []        # x_1 .. x_T
        self.pre: list[np.ndarray] = []       # a_1 .. a_T
        self.states: list[np.ndarray] = [s0]  # s_0 .. s_T

    def forward(self, x_t: np.ndarray) -> np.ndarray:
        a_t = x_t @ self.U.T + self.states[-1] @ self.W.T + self.b
        s_t = _activate(self.activation, a_t)
        self.xs.append(x_t)
        self.pre.append(a_t)
        self.states.append(s_t)
        return s_t

    def backward(self, ds: list[np.ndarray]) -> list[np.ndarray]:
        """ds[t] = dL/ds_t from above for every stored step; returns dL/dx_t; sets `grads`.

        The gradient stops at s_0 (a constant); `ds0` keeps what would flow into it.
        """
        dU, dW, db = np.zeros_like(self.U), np.zeros_like(self.W), np.zeros_like(self.b)
        dx = [np.empty(0)] * len(self.xs)
        from_later = np.zeros_like(self.states[0])  # W^T delta_{t+1}: dL/ds_t through s_{t+1}
        for t in reversed(range(len(self.xs))):
            delta = (ds[t] + from_later) * _derivative(self.activation, self.pre[t], self.states[t + 1])
            dU += delta.T @ self.xs[t]
            dW += delta.T @ self.states[t]  # states[t] is s_{t-1}: the list starts at s_0
            db += delta.sum(axis=0)
            dx[t] = delta @ self.U
            from_later = delta @ self.W
        self.grads = {"U": dU, "W": dW, "b": db}
        self.ds0 = from_later
        return dx

    def update(self, lr: float) -> None:
        """Gradient descent on every parameter (the tutorial stepped W only)."""
        self.U -= lr * self.grads["U"]
        self.W -= lr * self.grads["W"]
        self.b -= lr * self.grads["b"]


class OutputLayer:
    """o_t = g(V s_t + c): softmax with cross-entropy ("ce"), identity with squared error ("mse")."""

    def __init__(self, input_size: int, output_size: int, loss: str = "ce", seed=0):
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not valid; allowed: {', '.join(LOSSES)}")
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(input_size)
        self.V = rng.uniform(-bound, bound, (output_size, input_size))
        self.c = rng.uniform(-bound, bound, output_size)
        self.loss_kind = loss
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, s_t: np.ndarray) -> np.ndarray:
        z = s_t @ self.V.T + self.c
        if self.loss_kind == "mse":
            return z
        z = z - z.max(axis=1, keepdims=True)  # softmax, shifted for stability
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def loss_and_backward(self, features: dict[int, np.ndarray], targets: dict[int, np.ndarray],
                          count: int | None = None) -> tuple[float, dict[int, np.ndarray]]:
        """Mean loss over batch and scored steps, and dL/ds_t for each scored step; sets `grads`.

        `count` is the number of scored steps the mean runs over (default: those given here).
        """
        count = len(targets) if count is None else count
        dV, dc = np.zeros_like(self.V), np.zeros_like(self.c)
        total, ds = 0.0, {}
        for t, d in targets.items():
            s_t, o_t = features[t], self.forward(features[t])
            batch = len(s_t)
            if self.loss_kind == "ce":
                d = np.asarray(d, dtype=np.int64)
                rows = np.arange(batch)
                total += -np.log(o_t[rows, d]).sum() / (batch * count)
                do = o_t.copy()
                do[rows, d] -= 1.0  # d(-log softmax)/dz = o - onehot
                do /= batch * count
            else:
                d = np.asarray(d, dtype=np.float64).reshape(o_t.shape)
                norm = batch * count * o_t.shape[1]
                total += ((o_t - d) ** 2).sum() / norm
                do = 2.0 * (o_t - d) / norm
            dV += do.T @ s_t
            dc += do.sum(axis=0)
            ds[t] = do @ self.V
        self.grads = {"V": dV, "c": dc}
        return float(total), ds

    def update(self, lr: float) -> None:
        self.V -= lr * self.grads["V"]
        self.c -= lr * self.grads["c"]


class ElmanNetwork:
    """Stacked Elman layers (layer l reads layer l-1's states as its x_t) under one output layer."""

    directions = 1

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 activation: str = "tanh", loss: str = "ce", seed=0):
        rng = np.random.default_rng(seed)
        width = hidden_size * self.directions
        self.layers = [[ElmanLayer(input_size if l == 0 else width, hidden_size, activation, rng)
                        for _ in range(self.directions)] for l in range(num_layers)]
        self.out = OutputLayer(width, output_size, loss, rng)
        self.hidden_size, self.num_layers, self.loss_kind = hidden_size, num_layers, loss

    @property
    def bidirectional(self) -> bool:
        return self.directions == 2

    def _named_layers(self):
        for l, pair in enumerate(self.layers):
            for d, layer in enumerate(pair):
                yield f"_l{l}" + ("_reverse" if d else ""), layer

    # -- parameters, in the tutorial's names with torch's layer suffixes ------------------------------
    def params(self) -> dict[str, np.ndarray]:
        named = {}
        for suffix, layer in self._named_layers():
            named.update({f"U{suffix}": layer.U, f"W{suffix}": layer.W, f"b{suffix}": layer.b})
        return {**named, "V": self.out.V, "c": self.out.c}

    def gradients(self) -> dict[str, np.ndarray]:
        grads = {}
        for suffix, layer in self._named_layers():
            grads.update({f"{k}{suffix}": v.copy() for k, v in layer.grads.items()})
        return {**grads, **{k: v.copy() for k, v in self.out.grads.items()}}

    def set_gradients(self, grads: dict[str, np.ndarray]) -> None:
        for suffix, layer in self._named_layers():
            layer.grads = {k: grads[f"{k}{suffix}"].copy() for k in ("U", "W", "b")}
        self.out.grads = {k: grads[k].copy() for k in ("V", "c")}

    def update(self, lr: float) -> None:
        for _, layer in self._named_layers():
            layer.update(lr)
        self.out.update(lr)

    def load_torch_weights(self, recurrent, head) -> None:
        """From torch's names: U = weight_ih, W = weight_hh, b = bias_ih + bias_hh, V/c = head."""
        for suffix, layer in self._named_layers():
            layer.U = _numpy(recurrent[f"weight_ih{suffix}"])
            layer.W = _numpy(recurrent[f"weight_hh{suffix}"])
            layer.b = _numpy(recurrent[f"bias_ih{suffix}"]) + _numpy(recurrent[f"bias_hh{suffix}"])
        self.out.V, self.out.c = _numpy(head["weight"]), _numpy(head["bias"])

    def torch_weights(self) -> tuple[dict, dict]:
        recurrent = {}
        for suffix, layer in self._named_layers():
            recurrent.update({f"weight_ih{suffix}": layer.U.copy(), f"weight_hh{suffix}": layer.W.copy(),
                              f"bias_ih{suffix}": layer.b.copy(), f"bias_hh{suffix}": np.zeros_like(layer.b)})
        return recurrent, {"weight": self.out.V.copy(), "bias": self.out.c.copy()}

    # -- one pass -----------------------------------------------------------------------------------
    def reset_state(self, batch_size: int, state=None) -> None:
        """state: torch's layout [L * D, B, H] (zeros when None)."""
        for index, (_, layer) in enumerate(self._named_layers()):
            layer.reset_state(batch_size, None if state is None else _numpy(state)[index])

    def state_after(self, steps: int) -> np.ndarray:
        """[L * D, B, H]: each layer's state after `steps` steps of the current pass (copied)."""
        return np.stack([layer.states[steps] for _, layer in self._named_layers()])

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """x [B, T, F] -> top-layer features per step, [B, D*H] each, directions concatenated."""
        inputs = [x[:, t] for t in range(x.shape[1])]
        for pair in self.layers:
            per_direction = []
            for d, layer in enumerate(pair):
                order = _order(len(inputs), reverse=d == 1)
                outputs = [np.empty(0)] * len(inputs)
                for t in order:
                    outputs[t] = layer.forward(inputs[t])
                per_direction.append(outputs)
            inputs = [np.concatenate(step, axis=1) for step in zip(*per_direction)]
        return inputs

    def backward(self, dfeatures: dict[int, np.ndarray], seq_len: int) -> None:
        """dL/d(top features) at the scored steps -> every layer's `grads`."""
        width = self.layers[-1][0].hidden_size
        zeros = np.zeros((len(self.layers[0][0].states[0]), width * self.directions))
        d_inputs = [dfeatures.get(t, zeros) for t in range(seq_len)]
        for pair in reversed(self.layers):
            d_below = None
            for d, layer in enumerate(pair):
                order = _order(seq_len, reverse=d == 1)  # the layer stored its steps in this order
                ds = [d_inputs[t][:, d * width:(d + 1) * width] for t in order]
                dx = layer.backward(ds)
                dx = dx[::-1] if d == 1 else dx  # back to time order
                d_below = dx if d_below is None else [a + b for a, b in zip(d_below, dx)]
            d_inputs = d_below

    def loss_and_backward(self, x: np.ndarray, targets, count: int | None = None) -> float:
        """Forward from the current state, loss on the scored steps, backward; sets gradients."""
        features = self.forward(x)
        loss, dfeatures = self.out.loss_and_backward(dict(enumerate(features)), targets, count)
        self.backward(dfeatures, x.shape[1])
        return loss


class BidirectionalElmanNetwork(ElmanNetwork):
    """Each layer runs forward (s_t) and backward (s'_t, from step T down); outputs are [s_t, s'_t]."""

    directions = 2


def _order(seq_len: int, reverse: bool) -> list[int]:
    return list(range(seq_len - 1, -1, -1)) if reverse else list(range(seq_len))


def scored_targets(targets, seq_len: int, loss: str) -> dict[int, np.ndarray]:
    """{step: target} from the forms in the module docstring."""
    if isinstance(targets, dict):
        return dict(targets)
    targets = np.asarray(targets)
    per_step_ndim = 2 if loss == "ce" else 3
    if targets.ndim == per_step_ndim:
        return {t: targets[:, t] for t in range(seq_len)}
    if targets.ndim == per_step_ndim - 1:
        return {seq_len - 1: targets}
    raise ValueError(f"{loss} targets must be [B, T{'' if loss == 'ce' else ', O'}] (every step) or "
                     f"[B{'' if loss == 'ce' else ', O'}] (final step); got shape {targets.shape}")


# -- training procedures ----------------------------------------------------------------------------
def bptt_gradients(net: ElmanNetwork, x, targets, initial_state=None) -> tuple[float, dict]:
    """Full BPTT: one forward over the whole sequence, one backward from every scored step."""
    x = _numpy(x)
    net.reset_state(x.shape[0], initial_state)
    loss = net.loss_and_backward(x, scored_targets(targets, x.shape[1], net.loss_kind))
    return loss, net.gradients()


def lookback_gradients(net: ElmanNetwork, x, targets, k: int, initial_state=None) -> tuple[float, dict]:
    """The tutorial's windowed gradient: step tau's loss reaches back through steps tau-k+1..tau only.

    Sums, over the scored steps, the full-BPTT gradient of that step's loss from the state k steps
    before it (a constant), all with the current parameters; the result is also set on `net`, so
    `net.update(lr)` makes the tutorial's one update per sequence.
    """
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if net.bidirectional:
        raise ValueError("a look-back window needs a causal (unidirectional) network")
    x = _numpy(x)
    batch, seq_len = x.shape[:2]
    scored = scored_targets(targets, seq_len, net.loss_kind)
    net.reset_state(batch, initial_state)
    net.forward(x)
    states = [net.state_after(t) for t in range(seq_len + 1)]  # the one pass every window starts from
    total, grads = 0.0, None
    for tau, d in sorted(scored.items()):
        start = max(0, tau + 1 - k)
        net.reset_state(batch, states[start])
        total += net.loss_and_backward(x[:, start:tau + 1], {tau - start: d}, count=len(scored))
        step = net.gradients()
        grads = step if grads is None else {n: grads[n] + g for n, g in step.items()}
    net.set_gradients(grads)
    return total, grads


@dataclass(frozen=True)
class Window:
    """One TBPTT window over steps [first, end): back-propagates from them down to `start`."""

    start: int  # the state after `start` steps is the window's constant initial state
    first: int  # first step this window scores
    end: int    # one past the last


def tbptt_windows(seq_len: int, k1: int, k2: int) -> list[Window]:
    if not 1 <= k1 <= k2:
        raise ValueError(f"TBPTT needs 1 <= k1 <= k2; got k1={k1}, k2={k2}")
    return [Window(max(0, min(first + k1, seq_len) - k2), first, min(first + k1, seq_len))
            for first in range(0, seq_len, k1)]


def tbptt_train_sequence(net: ElmanNetwork, x, targets, k1: int, k2: int, lr: float,
                         initial_state=None, losses: list | None = None) -> list[dict]:
    """Train on one batch of sequences with TBPTT(k1, k2) and SGD; returns each update's gradients.

    Each update's loss is appended to `losses` if one is given.
    """
    if net.bidirectional:
        raise ValueError("truncated BPTT needs a causal (unidirectional) network")
    x = _numpy(x)
    batch, seq_len = x.shape[:2]
    scored = scored_targets(targets, seq_len, net.loss_kind)
    windows = tbptt_windows(seq_len, k1, k2)
    recorded = {0: None if initial_state is None else _numpy(initial_state)}
    updates = []
    for i, w in enumerate(windows):
        net.reset_state(batch, recorded[w.start])
        features = net.forward(x[:, w.start:w.end])  # re-run with the current parameters
        if i + 1 < len(windows):
            # k2 >= k1, so the next window's start lies within this pass: record it before updating
            recorded[windows[i + 1].start] = net.state_after(windows[i + 1].start - w.start)
        own = {t - w.start: d for t, d in scored.items() if w.first <= t < w.end}
        if not own:
            continue  # nothing scored here: the pass only carried the state forward
        loss, dfeatures = net.out.loss_and_backward(dict(enumerate(features)), own)
        net.backward(dfeatures, w.end - w.start)
        updates.append(net.gradients())
        net.update(lr)
        if losses is not None:
            losses.append(loss)
    return updates


def torch_named_gradients(grads: dict, encoder_prefix: str = "", head_prefix: str = "head.") -> dict:
    """The reference's gradients under torch's parameter names (b's goes to bias_ih and bias_hh)."""
    named = {}
    for key, value in grads.items():
        if key in ("V", "c"):
            named[head_prefix + ("weight" if key == "V" else "bias")] = value
            continue
        symbol, suffix = key[0], key[1:]
        if symbol == "b":
            named[f"{encoder_prefix}bias_ih{suffix}"] = value
            named[f"{encoder_prefix}bias_hh{suffix}"] = value
        else:
            named[f"{encoder_prefix}weight_{'ih' if symbol == 'U' else 'hh'}{suffix}"] = value
    return named
