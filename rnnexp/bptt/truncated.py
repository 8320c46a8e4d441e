"""Truncated back-propagation through time as the training step of `SequenceModel`.

TBPTT(k1, k2) after Williams & Peng (1990): every k1 steps the optimizer steps once; the gradient
is that of the losses at those k1 steps, back-propagated at most k2 steps (k2 >= k1). Written out
for one batch of sequences of T steps:

    windows    x.split(k1, dim=1): window j ends at step t_j = min(j * k1, T) (the last may be shorter)
    window j   start = max(0, t_j - k2); take s_start, the state recorded by window j-1 (s_0 for j = 1),
               detached; re-run the forward over steps start+1 .. t_j with the current parameters;
               loss = mean over the batch and over window j's scored steps; backward; clip; step
               (the clip inside the step: `_Optimisation.update`).
               While running it, record (detached) the state where window j+1 will start,
               max(0, t_{j+1} - k2) = t_j + k1 - k2 for a full next window: when k2 > k1 the forward
               runs in two pieces, start .. that step, then on to t_j.
    updates    only windows with at least one scored step: every window of a per-step task, only the
               last window of a final-target task (one update per sequence reaching back k2 steps).

The state is detached at each window's start because otherwise the graph would keep every earlier
step alive and the backward pass would run to the start of the sequence: that is full BPTT, with
its memory. k1 = k2 = T is one window: full BPTT exactly. k1 >= T is accepted for that reason
(a sweep over k can include the sequence length) and logged as a notice rather than refused.

`LookbackBPTT` is the tutorial's variant: one update per sequence, with the parameters at its start;
the loss at step tau back-propagates through steps max(1, tau - k + 1) .. tau only.

Both run under Lightning's manual optimisation, where Lightning neither clips gradients nor steps
learning-rate schedulers: `_Optimisation` below steps the schedulers, and `SequenceModel`'s
`on_before_optimizer_step` hook clips, so the `trainer.gradient_clip_val` and `scheduler=...` of a
config act the same under every `bptt=...`.
"""

from __future__ import annotations

import logging

import torch

from rnnexp.choices import BPTT_MODES
from rnnexp.errors import ConfigError
from rnnexp.nn.recurrent import detach_state

log = logging.getLogger(__name__)

# The prediction of a final-target task must depend on the last step's state only: a re-run window
# cannot average outputs over steps it did not re-run.
TRUNCATABLE_READOUTS = ("final_state", "last_output")


def truncated_from_config(node, bidirectional: bool, seq_len: int):
    """The strategy for a `bptt` config node (conf/bptt/*.yaml) other than `full`."""
    name = str(node.name)
    if name not in BPTT_MODES or name == "full":
        raise ConfigError("bptt.name", name, BPTT_MODES)
    if bidirectional:
        raise ConfigError("bptt.name", name, "full, when model.bidirectional=true",
                          hint="a backward direction reads every later step, so the sequence "
                               "cannot be cut causally; use bptt=full or model.bidirectional=false")
    k1, k2 = _window_length(node, "k1"), _window_length(node, "k2")
    if name == "lookback" and k2 != k1:
        raise ConfigError("bptt.k2", k2, f"equal to bptt.k1 ({k1}) for bptt=lookback",
                          hint="its one look-back length is bptt.k1")
    if k2 < k1:
        raise ConfigError("bptt.k2", k2, f"an integer >= bptt.k1 ({k1})",
                          hint="each update's gradient must reach back at least over the k1 steps it scores")
    if k1 >= seq_len:
        log.warning("bptt.k1=%d >= data.seq_len=%d: one window covers the whole sequence, so "
                    "bptt=%s is full BPTT here", k1, seq_len, name)
    return TruncatedBPTT(k1, k2) if name == "truncated" else LookbackBPTT(k1)


def _window_length(node, key: str) -> int:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"bptt.{key}", value, "an integer >= 1 (time steps)")
    return value


def _check_readout(module) -> None:
    if not module.task.per_step and module.readout_kind not in TRUNCATABLE_READOUTS:
        raise ConfigError("model.readout", module.readout_kind, TRUNCATABLE_READOUTS,
                          hint=f"bptt={module.bptt.name} re-runs only the last steps of a sequence")


class _Optimisation:
    """What Lightning's automatic optimisation would do around a backward pass, done by hand."""

    automatic_optimization = False

    def update(self, module, loss: torch.Tensor) -> None:
        """One optimizer step on `loss`: zero, backward, step, step-interval schedulers.
        `trainer.global_step` counts these steps.

        The step clips the gradients by global norm at `module.gradient_clip_val` first: Lightning's
        precision plugin calls the module's `on_before_optimizer_step` hook, which clips, inside
        `optimizer.step()`. Not here, before it: under trainer.precision=16-mixed the gradients
        are still multiplied by the loss scale until the plugin unscales them in that step, so a
        clip here would act on gradients ~65536x too large."""
        optimizer = module.optimizers()
        optimizer.zero_grad()
        module.manual_backward(loss)
        optimizer.step()  # unscale (mixed precision), clip (module.on_before_optimizer_step), step
        module.step_schedulers("step", module.trainer.global_step)


class TruncatedBPTT(_Optimisation):
    """Williams & Peng's TBPTT(k1, k2) (module docstring), under manual optimisation."""

    name = "truncated"

    def __init__(self, k1: int, k2: int | None = None):
        self.k1, self.k2 = int(k1), int(k2 if k2 is not None else k1)

    def training_step(self, module, batch, batch_idx):
        _check_readout(module)
        x, y = batch
        steps = x.shape[1]
        per_step = module.task.per_step
        ends = _cumulative([chunk.shape[1] for chunk in x.split(self.k1, dim=1)])
        state = None  # s_start of the current window; None is s_0 (zeros)
        losses, predictions = [], []
        for j, end in enumerate(ends):
            start = max(0, end - self.k2)
            next_start = max(0, ends[j + 1] - self.k2) if j + 1 < len(ends) else None
            if not per_step and end < steps:
                # No target in this window, so no update: only carry the state on to the next start.
                state = _advance(module, x, start, next_start, state)
                continue
            prediction, state = self._window_forward(module, x, start, end, next_start, state)
            if per_step:
                own = end - (ends[j - 1] if j else 0)  # this window's k1 (or fewer) scored steps
                prediction, target = prediction[:, -own:], y[:, end - own:end]
            else:
                target = y
            loss = module.loss(prediction, target)
            self.update(module, loss)
            losses.append(loss.detach())
            predictions.append(prediction.detach())
        # train/loss: the mean of this batch's update losses, as a tensor (no per-step sync).
        loss = torch.stack(losses).mean()
        prediction = torch.cat(predictions, dim=1) if per_step else predictions[-1]
        module.log_train_step(loss, prediction, y)
        return loss

    @staticmethod
    def _window_forward(module, x, start: int, end: int, next_start: int | None, state):
        """Forward over steps start+1 .. end from `state` (detached); also return the detached
        state at `next_start`, where the next window will start (None after the last window)."""
        if next_start is None or next_start == end:
            prediction, final = module(x[:, start:end], state)
            return prediction, (None if next_start is None else detach_state(final))
        if next_start == start:
            prediction, _ = module(x[:, start:end], state)
            return prediction, state
        # k2 > k1: two pieces, so the state at next_start can be recorded on the way; the graph
        # runs through it unbroken.
        first, middle = module(x[:, start:next_start], state)
        second, _ = module(x[:, next_start:end], middle)
        prediction = torch.cat([first, second], dim=1) if module.task.per_step else second
        return prediction, detach_state(middle)


def _cumulative(lengths: list[int]) -> list[int]:
    ends, total = [], 0
    for length in lengths:
        total += length
        ends.append(total)
    return ends


def _advance(module, x, start: int, stop: int, state):
    """The state after steps start+1 .. stop from `state`, without a graph."""
    if stop == start:
        return state
    with torch.no_grad():
        _, state = module.encoder(x[:, start:stop], state)
    return detach_state(state)


class LookbackBPTT(_Optimisation):
    """The tutorial's variant: one update per sequence; the loss at step tau sees steps
    max(1, tau - k + 1) .. tau, starting from s_{tau - k} as a constant."""

    name = "lookback"

    def __init__(self, k: int):
        self.k = int(k)

    def training_step(self, module, batch, batch_idx):
        _check_readout(module)
        x, y = batch
        if module.task.per_step:
            prediction = self._each_step(module, x)
        else:
            steps = x.shape[1]
            state = _advance(module, x, 0, max(0, steps - self.k), None)
            prediction, _ = module(x[:, max(0, steps - self.k):], state)
        loss = module.loss(prediction, y)
        self.update(module, loss)
        module.log_train_step(loss.detach(), prediction.detach(), y)
        return loss.detach()

    def _each_step(self, module, x):
        """Predictions [B, T, ...], each with its own k-step graph."""
        batch, steps, features = x.shape
        k = min(self.k, steps)
        # Steps 1..k all start from s_0: one forward gives each its graph through steps 1..tau.
        head, _ = module(x[:, :k])
        if steps == k:
            return head
        # Steps tau = k+1..T: one length-k window each, batched, from the constant s_{tau-k}.
        states = []
        state = None
        with torch.no_grad():
            for t in range(steps - k):  # s_1 .. s_{T-k}, every layer (and the LSTM's cell state)
                _, state = module.encoder(x[:, t:t + 1], state)
                states.append(state)
        windows = x.unfold(1, k, 1)[:, 1:]  # [B, T-k, F, k]: windows starting at steps 2..T-k+1
        windows = windows.permute(0, 1, 3, 2).reshape(batch * (steps - k), k, features)
        start = _stack_states(states)
        prediction, _ = module(windows, start)
        tail = prediction[:, -1].reshape(batch, steps - k, *prediction.shape[2:])
        return torch.cat([head, tail], dim=1)


def _stack_states(states: list):
    """[s_1 .. s_n] each [L, B, H] (or (h, c)) -> [L, B * n, H], batch-major like the windows."""
    def stack(parts):
        layers, batch, hidden = parts[0].shape
        return torch.stack(parts, dim=2).reshape(layers, batch * len(parts), hidden).contiguous()

    if isinstance(states[0], tuple):
        return tuple(stack([s[i] for s in states]) for i in range(len(states[0])))
    return stack(states)
