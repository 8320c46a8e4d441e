"""What a data module asks of the model: the task kind and the sizes that follow from it."""

from __future__ import annotations

from dataclasses import dataclass

TASK_KINDS = ("classify_last", "regress_last", "classify_each", "regress_each")


@dataclass(frozen=True)
class TaskSpec:
    """kind:
         classify_last   one label per sequence, read after the last step (sequence MNIST)
         regress_last    one real target per sequence (the adding problem)
         classify_each   one label per step (copy memory)
         regress_each    one real target per step (the tutorial's two-step toy)
    input_size:   features per time step
    output_size:  classes (classification) or 1 (regression)
    seq_len:      time steps per sequence
    baseline:     the score of a memoryless predictor on the task's main metric, logged beside the
                  curves so they can be read against it (nan when the task has none)
    loss_baseline:  the same predictor's loss, logged as `<stage>/loss_baseline` (nan: none); for
                  copy memory it differs from `baseline`, which is on the recalled symbols' accuracy
    scored_last_steps:  for per-step tasks, the main metric counts only the last n steps (0 = all)
    """

    kind: str
    input_size: int
    output_size: int
    seq_len: int
    baseline: float = float("nan")
    scored_last_steps: int = 0
    loss_baseline: float = float("nan")

    @property
    def is_classification(self) -> bool:
        return self.kind in ("classify_last", "classify_each")

    @property
    def per_step(self) -> bool:
        """A target (and a loss term) at every step, not only after the last one."""
        return self.kind in ("classify_each", "regress_each")

    @property
    def main_metric(self) -> str:
        return "acc" if self.is_classification else "mse"
