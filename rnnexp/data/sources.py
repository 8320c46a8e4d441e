"""Where the pixels come from: local raw files, torchvision's checksummed download, or the
real-MNIST subset bundled with rnnexp (rnnexp/data/bundled/).

`source=auto` tries them in that order and says which one it used; the choice is recorded
in the run's hparams (`data/source_used`), so two runs never silently compare different data.
"""

from __future__ import annotations

import functools
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnexp.choices import DATASETS, SOURCES
from rnnexp.data.idx import read_images_and_labels
from rnnexp.errors import ConfigError, DataError, DataNotFoundError

log = logging.getLogger(__name__)


# torchvision's folder name per data set: <data_dir>/<folder>/raw/<file>[.gz]
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# what each label 0..9 means (Fashion-MNIST: Zalando's README); saved in every checkpoint
CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}

# The bundled subset: 5,000 real MNIST training digits, 500 per class (rnnexp/data/bundled/README.md).
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_FILES = ("mnist-5k-images-idx3-ubyte.gz", "mnist-5k-labels-idx1-ubyte.gz")
# Stratified, fixed split of that subset: the first 400 of each class (after a seed-0 shuffle)
# train, the other 100 test. The seed is part of the data set's definition, not a knob.
BUNDLED_TEST_PER_CLASS = 100
BUNDLED_SPLIT_SEED = 0


@dataclass
class RawSplits:
    """uint8 images [N, 28, 28] and int64 labels [N] for train and test, and where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    location: str


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_test_files(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and int64 labels [N] of the test IDX pair in `folder` (data.test_dir):
    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or .gz, any number of images."""
    folder = Path(folder)
    images_stem, labels_stem, _ = SPLIT_FILES["test"]
    if not folder.is_dir():
        raise DataNotFoundError(f"data.test_dir={str(folder)!r}: no such folder; give the folder that holds "
                                f"{images_stem}[.gz] and {labels_stem}[.gz]")
    images, labels = _find(folder, images_stem), _find(folder, labels_stem)
    missing = [f"{stem}[.gz]" for stem, path in ((images_stem, images), (labels_stem, labels)) if path is None]
    if missing:
        raise DataNotFoundError(f"data.test_dir={str(folder)!r}: no {' or '.join(missing)} in it; a test set "
                                f"is the IDX pair {images_stem}[.gz] and {labels_stem}[.gz]")
    test_x, test_y = read_images_and_labels(images, labels)
    return test_x, test_y.astype(np.int64)


def local_directories(dataset: str, data_dir: Path, system_dirs: list[str]) -> list[Path]:
    dirs = [data_dir / TORCHVISION_FOLDER[dataset] / "raw"]
    dirs += [Path(d) for d in system_dirs]
    return dirs


def load_local(dataset: str, data_dir: Path, system_dirs: list[str]) -> RawSplits:
    searched = local_directories(dataset, data_dir, system_dirs)
    for directory in searched:
        found = {split: (_find(directory, img), _find(directory, lab), n)
                 for split, (img, lab, n) in SPLIT_FILES.items()}
        if all(img and lab for img, lab, _ in found.values()):
            train_x, train_y = read_images_and_labels(*found["train"])
            test_x, test_y = read_images_and_labels(*found["test"])
            return RawSplits(train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64),
                             "local", str(directory))
    names = ", ".join(f"{s}[.gz]" for pair in SPLIT_FILES.values() for s in pair[:2])
    hint = " (Fashion-MNIST: apt-get install dataset-fashion-mnist)" if dataset == "fashion_mnist" else ""
    raise DataNotFoundError(f"data.source=local: no {dataset} files ({names}) in "
                    + " or ".join(str(d) for d in searched) + hint)


def load_download(dataset: str, data_dir: Path, timeout_s: float) -> RawSplits:
    """torchvision fetches and md5-checks the archives into <data_dir>/<Folder>/raw/."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[dataset]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # an offline machine should fail in seconds, not minutes
    try:
        for train in (True, False):
            cls(str(data_dir), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on the mirror
        reason = " ".join(str(exc).split())  # torchvision's message spans lines, one per mirror
        reason = reason if len(reason) < 160 else reason[:160] + "..."
        raise DataNotFoundError(f"data.source=download: could not download {dataset} into {data_dir} "
                                f"({reason})") from None
    finally:
        socket.setdefaulttimeout(previous)
    return load_local(dataset, data_dir, [])


def load_bundled(dataset: str) -> RawSplits:
    if dataset != "mnist":
        raise DataNotFoundError(f"data.source=bundled only has MNIST, not {dataset}; use data.source=local "
                                "(Fashion-MNIST: apt-get install dataset-fashion-mnist)")
    return _decode_bundled()


@functools.lru_cache(maxsize=1)
def _decode_bundled() -> RawSplits:
    """Read once per process (sweeps and tests build many data modules from it)."""
    images_path, labels_path = (BUNDLED_DIR / name for name in BUNDLED_FILES)
    if not images_path.is_file() or not labels_path.is_file():
        raise DataError(f"{BUNDLED_DIR}: the bundled MNIST subset is missing; reinstall rnnexp "
                        "(or re-create it with scripts/make_bundled_mnist.py)")
    images, labels = read_images_and_labels(images_path, labels_path, expected_count=5000)
    labels = labels.astype(np.int64)
    rng = np.random.default_rng(BUNDLED_SPLIT_SEED)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:BUNDLED_TEST_PER_CLASS]
                               for c in range(10)])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return RawSplits(images[~is_test], labels[~is_test], images[is_test], labels[is_test],
                     "bundled", str(BUNDLED_DIR))


def load_raw(dataset: str, source: str, data_dir: str | Path, system_dirs: list[str],
             download_timeout_s: float) -> RawSplits:
    if dataset not in DATASETS:
        raise ConfigError("data.dataset", dataset, DATASETS)
    if source not in SOURCES:
        raise ConfigError("data.source", source, SOURCES)
    data_dir = Path(data_dir)
    if source == "local":
        return load_local(dataset, data_dir, system_dirs)
    if source == "download":
        return load_download(dataset, data_dir, download_timeout_s)
    if source == "bundled":
        return load_bundled(dataset)
    reasons = []
    for name, loader in (("local", lambda: load_local(dataset, data_dir, system_dirs)),
                         ("download", lambda: load_download(dataset, data_dir, download_timeout_s)),
                         ("bundled", lambda: load_bundled(dataset))):
        try:
            raw = loader()
        except DataNotFoundError as exc:  # a corrupt file found is an error, not a reason to move on
            reasons.append(f"{name}: {exc}")
            continue
        if reasons:
            log.warning("data.source=auto: %s", "; ".join(reasons))
        log.warning("data.source=auto -> using %s %s from %s (%d train / %d test images)",
                    raw.source, dataset, raw.location, len(raw.train_labels), len(raw.test_labels))
        return raw
    raise DataNotFoundError(f"data.source=auto found no {dataset}: " + " | ".join(reasons))
