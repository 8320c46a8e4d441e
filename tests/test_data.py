"""Sequence-image data: sources, decoding, splits, orders and the checks on raw files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_DIR, needs_fashion

from rnnexp.data.idx import IMAGES_MAGIC, read_idx
from rnnexp.data.images import SequenceImageDataModule, pixel_permutation
from rnnexp.data.loaders import InMemorySequences
from rnnexp.data.sources import load_bundled, load_raw
from rnnexp.errors import ConfigError, DataError, DataNotFoundError


def test_bundled_mnist_split_is_stratified_400_train_100_test_per_class():
    raw = load_bundled("mnist")
    assert raw.train_images.shape == (4000, 28, 28) and raw.test_images.shape == (1000, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == [400] * 10
    assert np.bincount(raw.test_labels).tolist() == [100] * 10
    assert raw.train_images.dtype == np.uint8 and raw.train_images.max() > 200


@pytest.mark.parametrize("order,shape", [("row", (28, 28)), ("pixel", (784, 1)), ("permuted", (784, 1))])
def test_orders_give_documented_shapes_and_normalised_tensors(order, shape):
    dm = SequenceImageDataModule(source="bundled", order=order).prepare()
    train, val, test = dm.splits
    assert len(train) == 3600 and len(val) == 400 and len(test) == 1000
    assert tuple(train.inputs.shape[1:]) == shape and dm.task.seq_len == shape[0]
    assert abs(float(train.inputs.mean())) < 1e-3 and abs(float(train.inputs.std()) - 1) < 1e-2
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.int64


def test_permuted_order_is_the_pixel_order_under_a_seeded_permutation():
    pixel = SequenceImageDataModule(source="bundled", order="pixel").prepare()
    permuted = SequenceImageDataModule(source="bundled", order="permuted", permutation_seed=3).prepare()
    perm = pixel_permutation(3)
    assert torch.equal(perm, pixel_permutation(3)) and not torch.equal(perm, pixel_permutation(4))
    torch.testing.assert_close(permuted.splits[2].inputs, pixel.splits[2].inputs[:, perm])
    assert permuted.state_dict()["permutation"] == perm.tolist()  # saved in every checkpoint


def test_validation_split_is_fixed_by_its_seed():
    a = SequenceImageDataModule(source="bundled", split_seed=0).prepare()
    b = SequenceImageDataModule(source="bundled", split_seed=0).prepare()
    c = SequenceImageDataModule(source="bundled", split_seed=1).prepare()
    assert torch.equal(a.splits[1].targets, b.splits[1].targets)
    assert not torch.equal(a.splits[1].inputs, c.splits[1].inputs)


def test_training_batches_are_sliced_tensors_not_per_sample_transforms():
    dm = SequenceImageDataModule(source="bundled", batch_size=50).prepare()
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, InMemorySequences)
    assert loader.batch_size is None  # the sampler yields whole batches: no per-sample collate
    x, y = next(iter(loader))
    assert x.shape == (50, 28, 28) and y.shape == (50,)


def test_epoch_order_depends_only_on_seed_and_epoch():
    dm = SequenceImageDataModule(source="bundled", batch_size=100, shuffle_seed=7).prepare()
    first = [b.tolist() for b in dm.train_dataloader().sampler]
    again = [b.tolist() for b in dm.train_dataloader().sampler]
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(1)
    assert first == again and first != [b.tolist() for b in sampler]


def test_auto_source_falls_back_to_bundled_and_says_so(tmp_path, caplog):
    raw = load_raw("mnist", "auto", tmp_path, [], download_timeout_s=2)
    assert raw.source == "bundled"
    assert "using bundled mnist" in caplog.text


def test_local_source_without_files_names_the_folder_and_files(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_raw("mnist", "local", tmp_path, [], 2)
    assert str(tmp_path / "MNIST" / "raw") in str(err.value)
    assert "train-images-idx3-ubyte" in str(err.value)


def test_unknown_dataset_and_source_are_refused():
    with pytest.raises(ConfigError, match="data.dataset='cifar'.*mnist, fashion_mnist"):
        load_raw("cifar", "auto", ".", [], 2)
    with pytest.raises(ConfigError, match="data.source='ftp'.*auto, local, download, bundled"):
        load_raw("mnist", "ftp", ".", [], 2)


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_corrupt_idx_files_fail_with_the_file_name(tmp_path):
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    good = tmp_path / "good-images.gz"
    _write_idx(good, images, IMAGES_MAGIC)
    assert read_idx(good, IMAGES_MAGIC).shape == (5, 28, 28)
    with pytest.raises(DataError, match="holds 5 items, expected 60000"):
        read_idx(good, IMAGES_MAGIC, expected_count=60000)
    wrong_magic = tmp_path / "labels-as-images.gz"
    _write_idx(wrong_magic, images, 0x00000801)
    with pytest.raises(DataError, match="labels-as-images.gz: magic number"):
        read_idx(wrong_magic, IMAGES_MAGIC)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match="truncated.gz: cannot read"):
        read_idx(truncated, IMAGES_MAGIC)


def test_local_torchvision_layout_is_found_and_a_corrupt_file_is_an_error_not_a_fallback(tmp_path):
    raw_dir = tmp_path / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for stem, n in (("train", 60000), ("t10k", 10000)):
        _write_idx(raw_dir / f"{stem}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)), IMAGES_MAGIC)
        _write_idx(raw_dir / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10, 0x00000801)
    raw = load_raw("mnist", "auto", tmp_path, [], 2)
    assert raw.source == "local" and len(raw.train_labels) == 60000
    (raw_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_raw("mnist", "auto", tmp_path, [], 2)


@needs_fashion
def test_fashion_mnist_from_debian_package_is_full_size(tmp_path):
    raw = load_raw("fashion_mnist", "local", tmp_path, [str(FASHION_DIR)], 2)
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10


@needs_fashion
def test_fashion_mnist_in_torchvision_layout_reads_the_same(tmp_path):
    # torchvision's layout, unpacked (what `download` leaves): <root>/FashionMNIST/raw/<name>
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte",
                 "train-images-idx3-ubyte"):
        with gzip.open(FASHION_DIR / f"{name}.gz") as src, open(raw_dir / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    raw = load_raw("fashion_mnist", "local", tmp_path, [], 2)
    assert raw.location == str(raw_dir)
    debian = load_raw("fashion_mnist", "local", tmp_path / "none", [str(FASHION_DIR)], 2)
    assert np.array_equal(raw.test_images, debian.test_images)
