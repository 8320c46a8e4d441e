"""Batches straight out of in-memory tensors.

A DataLoader over a TensorDataset indexes one sample at a time and re-stacks them with
`default_collate`; here the sampler yields a whole batch of indices and the dataset answers
with one fancy-indexing op. The per-epoch order is a pure function of (seed, epoch), so a run
resumed from a checkpoint sees the same batches as the run left alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class InMemorySequences(Dataset):
    """inputs [N, T, F] and targets [N] or [N, T]; indexed by a batch of indices at once."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index):
        if isinstance(index, torch.Tensor):
            # index_select: a plain gather, about 3x faster than advanced indexing (x[index]) for
            # a batch of 128 rows of 28x28, which builds a general indexing kernel every call
            return self.inputs.index_select(0, index), self.targets.index_select(0, index)
        return self.inputs[index], self.targets[index]


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Yields index tensors of `batch_size`; shuffled by a generator seeded with seed + epoch.

    Lightning calls `set_epoch` at the start of every training epoch. Under data parallelism
    (`num_replicas` processes) process `rank` takes every num_replicas-th batch of the shared
    training order, starting at its rank, padded by wrapping around so that every process makes
    the same number of steps (the gradient all-reduce needs them all); for evaluation (`pad` False)
    it takes every num_replicas-th sample, unpadded, so that each sample is scored exactly once.
    The sampler shards by itself, so the Trainer runs with `use_distributed_sampler: false`
    (conf/trainer/cpu.yaml): one object knows the order, the shard and the position, which is
    what a mid-epoch resume needs.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0, pad: bool = True):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_replicas, self.rank, self.pad = int(num_replicas), int(rank), pad
        self.epoch = 0
        # batches of this process's share to leave out, set when resuming mid-epoch
        # (rnnexp.callbacks.resume.ExactResume); used by the next iteration only
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return torch.arange(self.num_samples)

    def _batches(self) -> list[torch.Tensor]:
        """This process's batches, in order."""
        order = self._order()
        if self.num_replicas > 1 and not self.pad:
            # evaluation: every num_replicas-th sample, so each process has some whenever there are
            # at least as many samples as processes
            return list(order[self.rank::self.num_replicas].split(self.batch_size))
        batches = list(order.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.num_replicas == 1:
            return batches
        per_rank = -(-len(batches) // self.num_replicas)  # the shorter shares wrap around
        return [batches[(self.rank + i * self.num_replicas) % len(batches)] for i in range(per_rank)]

    def __iter__(self) -> Iterator[torch.Tensor]:
        skip, self.skip_batches = self.skip_batches, 0
        yield from self._batches()[skip:]

    def __len__(self) -> int:
        if self.num_replicas > 1 and not self.pad:
            samples = len(range(self.rank, self.num_samples, self.num_replicas))
            return (samples + self.batch_size - 1) // self.batch_size
        full, rest = divmod(self.num_samples, self.batch_size)
        total = full + (0 if self.drop_last or rest == 0 else 1)
        return (total + self.num_replicas - 1) // self.num_replicas


def batch_loader(dataset: InMemorySequences, batch_size: int, shuffle: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """Training (shuffle=True) or evaluation batches of this process's share of `dataset`."""
    # batch_size=None: the sampler already yields batches, so no per-sample collate happens.
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed,
                                num_replicas=num_replicas, rank=rank, pad=shuffle)
    # Its own generator: DataLoader.__iter__ otherwise draws a seed from the global RNG at every
    # epoch, which would shift dropout's random numbers between a resumed and an uninterrupted run.
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))
