"""Sequence-image data: sources, decoding, splits, orders and the checks on raw files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_DIR, needs_fashion

from rnnexp.data.base import seeded_split
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


# -- the preprocessing a checkpoint carries; data.test_dir ----------------------------------------
def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    """An IDX file (gzipped when the name ends in .gz), as MNIST ships them."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_test_dir(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", images, IMAGES_MAGIC)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", labels, 0x00000801)
    return folder


def checkpoint_round_trip(state: dict, tmp_path: Path) -> dict:
    """As Lightning saves the data module's state and rnnexp-eval reads it (weights_only=True)."""
    torch.save({"SequenceImageDataModule": state}, tmp_path / "state.ckpt")
    return torch.load(tmp_path / "state.ckpt", weights_only=True)["SequenceImageDataModule"]


def test_checkpoint_state_holds_the_whole_preprocessing(tmp_path):
    trained = SequenceImageDataModule(source="bundled", order="permuted", permutation_seed=3,
                                      limit_train_samples=512).prepare()
    state = checkpoint_round_trip(trained.state_dict(), tmp_path)
    # the mean and std are those of the 512 training images only (not validation, not test)
    train_idx = seeded_split(4000, 400, 0)[0][:512].numpy()
    pixels = load_bundled("mnist").train_images[train_idx].astype(np.float32) / 255.0
    assert (state["mean"], state["std"]) == (float(pixels.mean()), float(pixels.std()))
    assert state["order"] == "permuted" and state["dataset"] == "mnist"
    assert state["sequence_shape"] == [784, 1] and state["image_shape"] == [28, 28]
    assert state["class_names"] == [str(d) for d in range(10)]
    assert state["permutation"] == pixel_permutation(3).tolist()

    # another permutation seed and no limit: the checkpoint's preprocessing wins, and the splits
    # already built are built again under it
    other = SequenceImageDataModule(source="bundled", order="permuted", permutation_seed=9).prepare()
    other.load_state_dict(state)
    assert other.preprocessing == trained.preprocessing
    torch.testing.assert_close(other.splits[2].inputs, trained.splits[2].inputs, rtol=0, atol=0)


def test_fashion_class_names_are_saved(tmp_path):
    from rnnexp.data.images import ImagePreprocessing
    from rnnexp.data.sources import CLASS_NAMES

    saved = ImagePreprocessing("fashion_mnist", "row", 0.286, 0.353, (), CLASS_NAMES["fashion_mnist"])
    state = checkpoint_round_trip(saved.state(), tmp_path)
    assert state["class_names"][0] == "T-shirt/top" and state["class_names"][9] == "Ankle boot"
    assert ImagePreprocessing.from_state(state) == saved


def test_test_dir_with_the_checkpoint_preprocessing_reads_no_training_files(tmp_path):
    trained = SequenceImageDataModule(source="bundled", limit_train_samples=512).prepare()
    raw = load_bundled("mnist")
    test_dir = write_test_dir(tmp_path / "new_test", raw.test_images[:300], raw.test_labels[:300], gz=False)
    # source=local with an empty data_dir: any attempt to read training files would fail
    fresh = SequenceImageDataModule(source="local", data_dir=str(tmp_path / "nothing"), test_dir=str(test_dir))
    fresh.load_state_dict(checkpoint_round_trip(trained.state_dict(), tmp_path))
    fresh.prepare()
    assert fresh.split_sizes == (0, 0, 300) and fresh.source_used == "test_dir"
    torch.testing.assert_close(fresh.splits[2].inputs, trained.splits[2].inputs[:300], rtol=0, atol=0)
    assert fresh.splits[2].targets.tolist() == raw.test_labels[:300].tolist()


def test_a_checkpoint_without_saved_preprocessing_recomputes_it_from_the_training_files(tmp_path):
    """Checkpoints written before the preprocessing was stored hold only a permutation."""
    trained = SequenceImageDataModule(source="bundled").prepare()
    raw = load_bundled("mnist")
    old = SequenceImageDataModule(source="bundled", test_dir=str(write_test_dir(
        tmp_path / "t", raw.test_images[:10], raw.test_labels[:10])))
    old.load_state_dict({"permutation": []})
    assert old.saved_preprocessing is None
    old.prepare()  # the fallback: statistics of the training split, as at training time
    assert old.split_sizes == (3600, 400, 10)
    assert (old.preprocessing.mean, old.preprocessing.std) == (trained.preprocessing.mean, trained.preprocessing.std)


def test_test_dir_errors_name_the_folder_and_the_files(tmp_path):
    saved = SequenceImageDataModule(source="bundled", limit_train_samples=64).prepare().state_dict()
    for folder, expected in ((tmp_path / "absent", "no such folder"),
                             (tmp_path / "half", "no t10k-labels-idx1-ubyte[.gz] in it")):
        if folder.name == "half":
            folder.mkdir()
            write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8), IMAGES_MAGIC)
        dm = SequenceImageDataModule(source="bundled", test_dir=str(folder))
        dm.load_state_dict(saved)
        with pytest.raises(DataNotFoundError, match=f"data.test_dir='{folder}'.*{expected.replace('[', '.').replace(']', '.')}"):
            dm.prepare()
    # images and labels of different lengths: the IDX checks name both files
    bad = tmp_path / "bad"
    write_test_dir(bad, np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    dm = SequenceImageDataModule(source="bundled", test_dir=str(bad))
    dm.load_state_dict(saved)
    with pytest.raises(DataError, match="has 3 images but .*t10k-labels-idx1-ubyte.gz has 2 labels"):
        dm.prepare()


def test_a_checkpoint_of_another_order_is_refused(tmp_path):
    saved = SequenceImageDataModule(source="bundled", order="row", limit_train_samples=64).prepare().state_dict()
    with pytest.raises(ConfigError, match="data.order='pixel' is not valid; allowed: row"):
        SequenceImageDataModule(source="bundled", order="pixel").load_state_dict(saved)
