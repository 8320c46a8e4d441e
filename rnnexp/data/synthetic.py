"""Synthetic long-memory tasks, generated in memory from a seed.

    adding        (Hochreiter & Schmidhuber 1997; Le et al. 2015) T steps of (value, marker):
                  values ~ U[0, 1], one marker in each half; predict the sum of the two marked values.
    copy_memory   (Arjovsky et al. 2016) 10 symbols from 8 letters, a gap of T steps ending in a
                  delimiter, then recall the 10 symbols: T + 20 steps, a label at every step.
    worked_example      the tutorial's two-step example, x = [1, 2, 3], [2, 3, 4] and d = [1], [2].

Each split is drawn from its own generator, numpy's default_rng([seed, split]), so the test set
does not change when the training set grows, and the same seed always gives the same data.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from rnnexp.data.base import InMemoryDataModule
from rnnexp.data.loaders import InMemorySequences
from rnnexp.data.task import TaskSpec
from rnnexp.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _check_seq_len(seq_len, minimum: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < minimum:
        raise ConfigError("data.seq_len", seq_len, f"an integer >= {minimum} (time steps)")


class SyntheticDataModule(InMemoryDataModule):
    """Subclasses implement `generate(n, rng) -> (inputs, targets)` and `task`."""

    min_seq_len = 1

    def __init__(self, seq_len: int, train_size: int, val_size: int, test_size: int, seed: int,
                 batch_size: int, eval_batch_size: int, shuffle_seed: int, limit_train_samples: int = 0):
        super().__init__(batch_size, eval_batch_size, shuffle_seed)
        _check_seq_len(seq_len, self.min_seq_len)
        for key, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"data.{key}", value, "an integer > 0 (sequences)")
        self.seq_len, self.seed = seq_len, int(seed)
        self.sizes = (train_size, val_size, test_size)
        self.limit_train_samples = int(limit_train_samples)

    def generate(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def build_splits(self):
        sizes = list(self.sizes)
        if self.limit_train_samples > 0:  # smoke runs: fewer training sequences, same val/test
            sizes[0] = min(sizes[0], self.limit_train_samples)
        splits = tuple(InMemorySequences(*self.generate(n, np.random.default_rng([self.seed, i])))
                       for i, n in enumerate(sizes))
        log.info("%s: %d train / %d val / %d test sequences of %d steps (seed %d)", type(self).__name__,
                 *(len(s) for s in splits), self.task.seq_len, self.seed)
        return splits

    def describe(self) -> dict:
        return {"data/source_used": "generated"}


class AddingDataModule(SyntheticDataModule):
    """inputs [N, T, 2]: (value ~ U[0, 1], marker in {0, 1}); targets [N]: the two marked values' sum.

    One marker falls uniformly in steps [0, T/2), the other in [T/2, T) (0-based), so the first one
    must be remembered for at least T/2 steps. Predicting the constant 1 (the mean of the sum) scores
    MSE = Var(u1 + u2) = 2 * Var(U[0, 1]) = 2 / 12 = 1/6 = 0.167: the baseline.
    """

    min_seq_len = 2  # one marker in each half

    @property
    def task(self) -> TaskSpec:
        return TaskSpec(kind="regress_last", input_size=2, output_size=1, seq_len=self.seq_len,
                        baseline=1 / 6, loss_baseline=1 / 6)

    def generate(self, n, rng):
        half = self.seq_len // 2
        values = rng.random((n, self.seq_len), dtype=np.float32)
        first = rng.integers(0, half, size=n)
        second = rng.integers(half, self.seq_len, size=n)
        markers = np.zeros((n, self.seq_len), dtype=np.float32)
        rows = np.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        targets = values[rows, first] + values[rows, second]
        return torch.from_numpy(np.stack([values, markers], axis=-1)), torch.from_numpy(targets)


class CopyMemoryDataModule(SyntheticDataModule):
    """inputs [N, T + 20, 10] one-hot; targets [N, T + 20] class indices.

    Symbols 0-7 are letters, 8 the blank, 9 the delimiter (never a target, so 9 output classes).
    Input:  10 letters, T - 1 blanks, the delimiter, 10 blanks.
    Target: T + 10 blanks, then the 10 letters.
    A memoryless model can only output blanks and then guess uniformly among 8 letters: a loss of
    10 ln 8 summed over T + 20 steps, i.e. 10 ln 8 / (T + 20) per step (0.1733 at T = 100), and
    accuracy 1/8 on the recalled letters (the main metric, `scored_last_steps=10`).
    """

    letters, recall = 8, 10
    blank, delimiter = 8, 9

    @property
    def task(self) -> TaskSpec:
        steps = self.seq_len + 2 * self.recall
        return TaskSpec(kind="classify_each", input_size=self.letters + 2, output_size=self.letters + 1,
                        seq_len=steps, baseline=1 / self.letters, scored_last_steps=self.recall,
                        loss_baseline=self.recall * math.log(self.letters) / steps)

    def generate(self, n, rng):
        steps = self.seq_len + 2 * self.recall
        symbols = rng.integers(0, self.letters, size=(n, self.recall))
        tokens = np.full((n, steps), self.blank, dtype=np.int64)
        tokens[:, : self.recall] = symbols
        tokens[:, self.seq_len + self.recall - 1] = self.delimiter
        targets = np.full((n, steps), self.blank, dtype=np.int64)
        targets[:, -self.recall:] = symbols
        inputs = torch.nn.functional.one_hot(torch.from_numpy(tokens), self.letters + 2).float()
        return inputs, torch.from_numpy(targets)


class WorkedExampleDataModule(InMemoryDataModule):
    """The tutorial's example: one sequence, x_1 = [1, 2, 3], x_2 = [2, 3, 4] with targets d_1 = 1,
    d_2 = 2, squared error at each step. `seq_len` > 2 continues the pattern (x_t = [t, t+1, t+2],
    d_t = t). The same sequence serves as train, val and test: the task is for debugging and for
    checking gradients by hand, not for generalising."""

    def __init__(self, seq_len: int = 2, batch_size: int = 1, eval_batch_size: int = 1,
                 shuffle_seed: int = 0, limit_train_samples: int = 0):
        super().__init__(batch_size, eval_batch_size, shuffle_seed)
        _check_seq_len(seq_len, 1)
        self.seq_len = seq_len

    @property
    def task(self) -> TaskSpec:
        return TaskSpec(kind="regress_each", input_size=3, output_size=1, seq_len=self.seq_len)

    def sequence(self) -> tuple[torch.Tensor, torch.Tensor]:
        """x [1, T, 3] and d [1, T]."""
        t = torch.arange(1, self.seq_len + 1, dtype=torch.float32)
        return torch.stack([t, t + 1, t + 2], dim=-1).unsqueeze(0), t.unsqueeze(0)

    def build_splits(self):
        return tuple(InMemorySequences(*(a.clone() for a in self.sequence())) for _ in SPLITS)

    def describe(self) -> dict:
        return {"data/source_used": "worked_example"}
