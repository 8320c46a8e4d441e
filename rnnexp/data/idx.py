"""Read the IDX files that MNIST and Fashion-MNIST ship in, plain or gzipped, and check them.

A truncated download, a wrong file under the right name or a half-written copy must fail here,
with the file's name, rather than train on garbage.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from rnnexp.errors import DataError

# IDX magic numbers: 0x00 0x00, type 0x08 (unsigned byte), then the number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); delete it and fetch the file again") from None


def read_idx(path: Path, expected_magic: int, expected_count: int | None = None) -> np.ndarray:
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: only {len(raw)} bytes, not an IDX file")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: magic number {magic:#010x}, expected {expected_magic:#010x} "
                        f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected_bytes = header + int(np.prod(dims))
    if len(raw) != expected_bytes:
        raise DataError(f"{path}: {len(raw)} bytes but its header {dims} needs {expected_bytes}; "
                        "the file is truncated or corrupt")
    if expected_count is not None and dims[0] != expected_count:
        raise DataError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_images_and_labels(images_path: Path, labels_path: Path, expected_count: int | None = None):
    images = read_idx(images_path, IMAGES_MAGIC, expected_count)
    labels = read_idx(labels_path, LABELS_MAGIC, expected_count)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} has {images.shape[0]} images but {labels_path} "
                        f"has {labels.shape[0]} labels")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected 28 x 28")
    if labels.max(initial=0) > 9:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..9")
    return images, labels
