"""Sequence MNIST and Fashion-MNIST: each 28 x 28 image read as a sequence.

    order=row       28 steps of 28 pixels (the tutorial's TensorFlow examples)
    order=pixel     784 steps of 1 pixel, scan-line order
    order=permuted  784 steps of 1 pixel under one fixed permutation drawn from `permutation_seed`

Images are decoded once into normalised float tensors (mean/std of the training split);
the training loop then only slices tensors.

Every checkpoint carries the preprocessing (`ImagePreprocessing`: mean, std, order, permutation,
sequence shape, class names) as this module's Lightning state (`state_dict`); `rnnexp-eval` and
`rnnexp-predict` load it back, so a checkpoint is evaluated with the statistics it was trained
with and needs no training files (`data.test_dir=<folder>`: a test set of its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from rnnexp.choices import ORDERS
from rnnexp.data.base import InMemoryDataModule, seeded_split
from rnnexp.data.loaders import InMemorySequences
from rnnexp.data.sources import CLASS_NAMES, load_raw, load_test_files
from rnnexp.data.task import TaskSpec
from rnnexp.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

PREPROCESSING_FORMAT = "rnnexp.image_preprocessing/1"


def pixel_permutation(seed: int) -> torch.Tensor:
    return torch.randperm(784, generator=torch.Generator().manual_seed(seed))


def images_to_sequences(images: np.ndarray, order: str, mean: float, std: float,
                        permutation: torch.Tensor | None) -> torch.Tensor:
    """Pixels in 0..255 (uint8 or float) [N, 28, 28] -> normalised sequences [N, T, F]."""
    x = (torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) / 255.0 - mean) / std
    if order == "row":
        return x.reshape(-1, 28, 28).contiguous()
    x = x.reshape(-1, 784)
    if order == "permuted":
        x = x[:, permutation]
    return x.unsqueeze(-1).contiguous()


@dataclass(frozen=True)
class ImagePreprocessing:
    """How a 28 x 28 image (pixels 0..255) becomes what the model reads: (x / 255 - mean) / std,
    read in `order` (under `permutation` for order=permuted), and what each class means."""

    dataset: str
    order: str
    mean: float
    std: float
    permutation: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    normalised_on: str = ""  # which images gave mean and std

    @property
    def sequence_shape(self) -> tuple[int, int]:
        return (28, 28) if self.order == "row" else (784, 1)

    def sequences(self, images: np.ndarray) -> torch.Tensor:
        permutation = torch.tensor(self.permutation, dtype=torch.long) if self.order == "permuted" else None
        return images_to_sequences(images, self.order, self.mean, self.std, permutation)

    def state(self) -> dict:
        """Plain values only: checkpoints are read back with torch.load(weights_only=True)."""
        return {"format": PREPROCESSING_FORMAT, "dataset": self.dataset, "order": self.order,
                "mean": self.mean, "std": self.std, "permutation": list(self.permutation),
                "image_shape": [28, 28], "sequence_shape": list(self.sequence_shape),
                "class_names": list(self.class_names), "normalised_on": self.normalised_on}

    @classmethod
    def from_state(cls, state: dict) -> ImagePreprocessing | None:
        """None for a checkpoint written before the preprocessing was saved (only a permutation)."""
        if not state or state.get("mean") is None:
            return None
        if state.get("format") != PREPROCESSING_FORMAT or state.get("order") not in ORDERS:
            raise CheckpointError(f"the checkpoint's preprocessing is in format {state.get('format')!r} "
                                  f"(order {state.get('order')!r}); this rnnexp reads {PREPROCESSING_FORMAT!r}: "
                                  "evaluate it with the rnnexp version that wrote it")
        return cls(dataset=str(state["dataset"]), order=str(state["order"]), mean=float(state["mean"]),
                   std=float(state["std"]), permutation=tuple(int(i) for i in state.get("permutation") or ()),
                   class_names=tuple(str(n) for n in state.get("class_names") or ()),
                   normalised_on=str(state.get("normalised_on", "")))


class SequenceImageDataModule(InMemoryDataModule):
    def __init__(self, dataset: str = "mnist", order: str = "row", source: str = "auto",
                 data_dir: str = "data", system_dirs: list[str] | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, permutation_seed: int = 0, batch_size: int = 128,
                 eval_batch_size: int = 1000, shuffle_seed: int = 0, download_timeout_s: float = 10.0,
                 limit_train_samples: int = 0, test_dir: str | None = None):
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
        self.test_dir = str(test_dir) if test_dir else None
        self.source_used = "not loaded"
        self.source_location = ""
        # the preprocessing the splits were built with; set from a checkpoint (load_state_dict)
        # before they are built, it is used as it is instead of being computed from the training split
        self.preprocessing: ImagePreprocessing | None = None
        self.saved_preprocessing: ImagePreprocessing | None = None

    @property
    def task(self) -> TaskSpec:
        steps, features = (28, 28) if self.order == "row" else (784, 1)
        return TaskSpec(kind="classify_last", input_size=features, output_size=10, seq_len=steps,
                        baseline=0.1)

    def build_splits(self):
        saved = self.saved_preprocessing
        if saved is not None and self.test_dir:  # the checkpoint's statistics: no training files needed
            self.preprocessing = saved
            self.source_used, self.source_location = "test_dir", self.test_dir
            test = self._labelled(*load_test_files(self.test_dir))
            empty = InMemorySequences(test.inputs[:0], test.targets[:0])
            log.info("%s (%s order): %d test sequences from data.test_dir=%s, preprocessing from the "
                     "checkpoint", self.dataset, self.order, len(test), self.test_dir)
            return empty, empty, test
        raw = load_raw(self.dataset, self.source, self.data_dir, self.system_dirs, self.download_timeout_s)
        self.source_used, self.source_location = raw.source, raw.location
        n_train = len(raw.train_labels)
        train_idx, val_idx = seeded_split(n_train, round(n_train * self.val_fraction), self.split_seed)
        if self.limit_train_samples > 0:  # tests and smoke runs: a fixed prefix of the shuffled split
            train_idx = train_idx[: self.limit_train_samples]
        if saved is not None:
            self.preprocessing = saved
        else:
            train_pixels = raw.train_images[train_idx.numpy()].astype(np.float32) / 255.0
            self.preprocessing = ImagePreprocessing(
                self.dataset, self.order, float(train_pixels.mean()), float(train_pixels.std()),
                tuple(self.permutation.tolist()) if self.permutation is not None else (),
                CLASS_NAMES[self.dataset], f"{len(train_idx)} training images of {raw.source} {self.dataset}")

        train = self._labelled(raw.train_images[train_idx.numpy()], raw.train_labels[train_idx.numpy()])
        val = self._labelled(raw.train_images[val_idx.numpy()], raw.train_labels[val_idx.numpy()])
        test = self._labelled(*(load_test_files(self.test_dir) if self.test_dir else (raw.test_images, raw.test_labels)))
        log.info("%s (%s order, source %s): %d train / %d val / %d test sequences of %d x %d",
                 self.dataset, self.order, raw.source, len(train), len(val), len(test),
                 self.task.seq_len, self.task.input_size)
        return train, val, test

    def _labelled(self, images: np.ndarray, labels: np.ndarray) -> InMemorySequences:
        return InMemorySequences(self.preprocessing.sequences(images),
                                 torch.from_numpy(np.asarray(labels, dtype=np.int64)))

    def describe(self) -> dict:
        return {"data/source_used": self.source_used}

    def state_dict(self) -> dict:
        # Saved in every checkpoint and read back (load_state_dict): a resumed, evaluated or
        # predicting run uses the statistics and the permutation it was trained under, not ones
        # computed again from whatever files it finds or drawn again from data.permutation_seed.
        if self.preprocessing is not None:
            return self.preprocessing.state()
        return {"permutation": self.permutation.tolist() if self.permutation is not None else []}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = ImagePreprocessing.from_state(state_dict)
        if saved is not None and saved.order != self.order:
            raise ConfigError("data.order", self.order, [saved.order],
                              hint="the checkpoint was trained on this order; its input size follows it")
        permutation = list(saved.permutation) if saved is not None else state_dict.get("permutation") or []
        rebuild = self._load_permutation(permutation)
        if saved is not None:
            rebuild |= self.preprocessing is not None and self.preprocessing != saved
            self.saved_preprocessing = saved
        if rebuild and self.splits is not None:  # built under other statistics: build them again
            self.splits = self.build_splits()

    def _load_permutation(self, saved: list[int]) -> bool:
        """Take the checkpoint's permutation; True when it differs from the one in use."""
        if self.order != "permuted" or not saved:
            return False
        saved = torch.tensor(saved, dtype=torch.long)
        if self.permutation is not None and torch.equal(saved, self.permutation):
            return False
        if sorted(saved.tolist()) != list(range(784)):
            raise ConfigError("data.permutation", f"{len(saved)} saved indices", "a permutation of 0..783",
                              hint="the checkpoint's data state is damaged")
        self.permutation = saved
        return True
