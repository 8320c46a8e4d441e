""""Every N optimizer steps", counted right when one batch makes several steps.

Under truncated BPTT on a per-step task, `trainer.global_step` advances once per window, so by the
end of a batch it may have jumped over a multiple of N (with N = 6 and 4 steps a batch: 4, 8, 12,
16, ... never 6 or 18). A test of `global_step % N == 0` at batch end would skip those; the test
here asks whether a multiple of N was reached during the batch.
"""

from __future__ import annotations


def crossed_multiple(before: int, after: int, every: int) -> bool:
    """True when some multiple of `every` (> 0) lies in (before, after]: the optimizer steps a batch
    took, from `before` at its start to `after` at its end. `every <= 0` is never due."""
    return every > 0 and after // every > before // every


class StepCadence:
    """Remembers `global_step` at each training batch's start; `due(trainer)` at its end says
    whether the batch reached a multiple of `every`. Stateless across a resume: a resumed run is
    due at the same steps as the uninterrupted one."""

    def __init__(self, every: int):
        self.every = int(every)
        self.step_at_batch_start = 0

    def batch_started(self, trainer) -> None:
        self.step_at_batch_start = trainer.global_step

    def due(self, trainer) -> bool:
        return crossed_multiple(self.step_at_batch_start, trainer.global_step, self.every)
