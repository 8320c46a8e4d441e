"""The part every rnnexp data module shares: three in-memory splits, a TaskSpec, and the
facts about the data that belong in the run's hparams."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from rnnexp.data.loaders import InMemorySequences, batch_loader
from rnnexp.data.task import TaskSpec
from rnnexp.errors import ConfigError


class InMemoryDataModule(pl.LightningDataModule):
    """Subclasses implement `build_splits()` -> (train, val, test) InMemorySequences and `task`."""

    def __init__(self, batch_size: int, eval_batch_size: int, shuffle_seed: int):
        super().__init__()
        if int(batch_size) <= 0:
            raise ConfigError("data.batch_size", batch_size, "an integer > 0")
        if int(eval_batch_size) <= 0:
            raise ConfigError("data.eval_batch_size", eval_batch_size, "an integer > 0")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.shuffle_seed = int(shuffle_seed)
        self.splits: tuple[InMemorySequences, InMemorySequences, InMemorySequences] | None = None

    # -- to implement -------------------------------------------------------------------------
    @property
    def task(self) -> TaskSpec:
        raise NotImplementedError

    def build_splits(self) -> tuple[InMemorySequences, InMemorySequences, InMemorySequences]:
        raise NotImplementedError

    def describe(self) -> dict:
        """Flat facts about the data for the hparams table (no None values)."""
        return {}

    # -- Lightning ----------------------------------------------------------------------------
    def prepare(self) -> InMemoryDataModule:
        """Decode once; idempotent. Called by `setup`, and by the trainer entry point before the
        model is built (the model's sizes come from `task`)."""
        if self.splits is None:
            self.splits = self.build_splits()
        return self

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Lightning's default walks the batch as a general collection and calls `.to` on each
        # tensor, every step: a batch of (inputs, targets) already on the device needs none of it.
        # (Here, not on the LightningModule: Lightning takes this hook from the data module.)
        if (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) and t.device == device for t in batch)):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _shard(self) -> dict:
        """This process's place among the data-parallel processes (one process: the whole set)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"num_replicas": trainer.world_size, "rank": trainer.global_rank}

    def train_dataloader(self):
        return batch_loader(self.splits[0], self.batch_size, shuffle=True, seed=self.shuffle_seed, **self._shard())

    def val_dataloader(self):
        return batch_loader(self.splits[1], self.eval_batch_size, shuffle=False, **self._shard())

    def test_dataloader(self):
        return batch_loader(self.splits[2], self.eval_batch_size, shuffle=False, **self._shard())

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        return tuple(len(s) for s in self.prepare().splits)


def seeded_split(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a fixed-seed random split of n items."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]
