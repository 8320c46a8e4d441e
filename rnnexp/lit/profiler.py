"""The Trainer's profiler when none is asked for: Lightning's pass-through one, minus its cost.

Lightning wraps every hook it calls (about 40 per training step, more with each callback) in
`trainer.profiler.profile(name)`. Its default PassThroughProfiler answers with a fresh
`@contextmanager` generator each time, a few microseconds apiece: a measurable share of a
10 ms step (see `rnnexp-bench --only epoch`). This one hands back one shared, reusable
`nullcontext`. `trainer.profiler=simple` (or advanced, pytorch) gets Lightning's real profilers.
"""

from __future__ import annotations

import contextlib

from pytorch_lightning.profilers import PassThroughProfiler

_NOTHING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    def profile(self, action_name: str) -> contextlib.nullcontext:
        return _NOTHING
