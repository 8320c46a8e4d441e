"""Sequence MNIST and Fashion-MNIST: each 28 x 28 image read as a sequence.

    order=row       28 steps of 28 pixels (the tutorial's TensorFlow examples)
    order=pixel     784 steps of 1 pixel, scan-line order
    order=permuted  784 steps of 1 pixel under one fixed permutation drawn from `permutation_seed`

Images are decoded once into normalised float tensors (mean/std of the training split);
the training loop then only slices tensors.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from rnnexp.choices import ORDERS
from rnnexp.data.base import InMemoryDataModule, seeded_split
from rnnexp.data.loaders import InMemorySequences
from rnnexp.data.sources import load_raw
from rnnexp.data.task import TaskSpec
from rnnexp.errors import ConfigError

log = logging.getLogger(__name__)



def pixel_permutation(seed: int) -> torch.Tensor:
    return torch.randperm(784, generator=torch.Generator().manual_seed(seed))


def images_to_sequences(images: np.ndarray, order: str, mean: float, std: float,
                        permutation: torch.Tensor | None) -> torch.Tensor:
    x = (torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0 - mean) / std
    if order == "row":
        return x.reshape(-1, 28, 28).contiguous()
    x = x.reshape(-1, 784)
    if order == "permuted":
        x = x[:, permutation]
    return x.unsqueeze(-1).contiguous()


class SequenceImageDataModule(InMemoryDataModule):
    def __init__(self, dataset: str = "mnist", order: str = "row", source: str = "auto",
                 data_dir: str = "data", system_dirs: list[str] | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, permutation_seed: int = 0, batch_size: int = 128,
                 eval_batch_size: int = 1000, shuffle_seed: int = 0, download_timeout_s: float = 10.0,
                 limit_train_samples: int = 0):
        super().__init__(batch_size, eval_batch_size, shuffle_seed)
        if order not in ORDERS:
            raise ConfigError("data.order", order, ORDERS)
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError("data.val_fraction", val_fraction, "a fraction in (0, 1)")
        self.dataset, self.order, self.source = dataset, order, source
        self.data_dir, self.system_dirs = data_dir, list(system_dirs or [])
        self.val_fraction, self.split_seed = float(val_fraction), int(split_seed)
        self.permutation_seed = int(permutation_seed)
        self.download_timeout_s = float(download_timeout_s)
        self.limit_train_samples = int(limit_train_samples)
        self.permutation = pixel_permutation(self.permutation_seed) if order == "permuted" else None
        self.source_used = "not loaded"
        self.source_location = ""

    @property
    def task(self) -> TaskSpec:
        steps, features = (28, 28) if self.order == "row" else (784, 1)
        return TaskSpec(kind="classify_last", input_size=features, output_size=10, seq_len=steps,
                        baseline=0.1)

    def build_splits(self):
        raw = load_raw(self.dataset, self.source, self.data_dir, self.system_dirs, self.download_timeout_s)
        self.source_used, self.source_location = raw.source, raw.location
        n_train = len(raw.train_labels)
        train_idx, val_idx = seeded_split(n_train, round(n_train * self.val_fraction), self.split_seed)
        if self.limit_train_samples > 0:  # tests and smoke runs: a fixed prefix of the shuffled split
            train_idx = train_idx[: self.limit_train_samples]
        train_pixels = raw.train_images[train_idx.numpy()].astype(np.float32) / 255.0
        mean, std = float(train_pixels.mean()), float(train_pixels.std())

        def split(images, labels):
            x = images_to_sequences(images, self.order, mean, std, self.permutation)
            return InMemorySequences(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))

        train = split(raw.train_images[train_idx.numpy()], raw.train_labels[train_idx.numpy()])
        val = split(raw.train_images[val_idx.numpy()], raw.train_labels[val_idx.numpy()])
        test = split(raw.test_images, raw.test_labels)
        log.info("%s (%s order, source %s): %d train / %d val / %d test sequences of %d x %d",
                 self.dataset, self.order, raw.source, len(train), len(val), len(test),
                 self.task.seq_len, self.task.input_size)
        return train, val, test

    def describe(self) -> dict:
        return {"data/source_used": self.source_used}

    def state_dict(self) -> dict:
        # Saved in every checkpoint and read back (load_state_dict): a resumed or evaluated run uses
        # the permutation it was trained under, not one drawn again from data.permutation_seed.
        return {"permutation": self.permutation.tolist() if self.permutation is not None else []}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("permutation") or []
        if self.order != "permuted" or not saved:
            return
        saved = torch.tensor(saved, dtype=torch.long)
        if self.permutation is not None and torch.equal(saved, self.permutation):
            return
        if sorted(saved.tolist()) != list(range(784)):
            raise ConfigError("data.permutation", f"{len(saved)} saved indices", "a permutation of 0..783",
                              hint="the checkpoint's data state is damaged")
        self.permutation = saved
        if self.splits is not None:  # built under another permutation: build them again
            self.splits = self.build_splits()
