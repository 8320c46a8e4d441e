"""`rnnexp-predict ckpt_path=<file> input=<path> [out=<csv>]`: a trained model's predictions on new data.

input, for a checkpoint of sequence MNIST / Fashion-MNIST (preprocessed as the checkpoint says):
    a folder of 28 x 28 PNG images      one row per file (grey, or RGB(A) averaged to grey)
    a .npy array [N, 28, 28] or [28, 28] pixels 0..255 (uint8, integer) or 0..1 (float)
    an IDX images file (idx3-ubyte, plain or .gz), as MNIST ships its images
  -> CSV: source, index, predicted, class_name, prob_0 ... prob_9

for a synthetic task (adding, copy memory, the worked example): a .npy array [N, T, F] or [T, F] of
the model's inputs (F as trained), as is
  -> regression (adding): source, index, prediction
     per-step tasks: source, index, step, prediction (regression) or predicted, prob_<c> ... (copy memory)
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

USAGE = """usage: rnnexp-predict ckpt_path=<checkpoint.ckpt> input=<folder of PNGs | file.npy | IDX images file> [out=<file.csv>]

Writes the model's predictions as CSV (default: predictions.csv in the current folder): for image
tasks, the predicted class and the probability of each class; for the synthetic tasks, the
regression or per-step outputs. The preprocessing is the checkpoint's own.
"""
INPUT_FORMS = ("input= takes a folder of 28 x 28 PNG images, a .npy array [N, 28, 28] (pixels 0..255 as "
               "integers, or 0..1 as floats) or an IDX images file (*-idx3-ubyte[.gz])")


def _fail(path, problem: str, fix: str = INPUT_FORMS):
    from rnnexp.errors import DataError

    raise DataError(f"{path}: {problem}; {fix}")


def image_pixels(array: np.ndarray, path) -> np.ndarray:
    """Pixels 0..255 as float32 [N, 28, 28] from an integer (0..255) or float (0..1) array."""
    if array.shape != (28, 28) and (array.ndim != 3 or array.shape[1:] != (28, 28)):
        _fail(path, f"array of shape {list(array.shape)}, not [N, 28, 28] or [28, 28]")
    array = array.reshape(-1, 28, 28)
    if len(array) == 0:
        _fail(path, "holds no images")
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            _fail(path, f"integer pixels from {array.min()} to {array.max()}, not 0..255")
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            _fail(path, f"float pixels from {np.nanmin(array):g} to {np.nanmax(array):g}, not 0..1",
                  "scale float images to 0..1 (or save them as uint8 0..255)")
        return array.astype(np.float32) * 255.0
    _fail(path, f"array of dtype {array.dtype}, not numbers")


def read_png_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    import matplotlib.image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        _fail(folder, "a folder without .png files")
    images = []
    for path in files:
        try:
            image = matplotlib.image.imread(path)  # PNG: floats in 0..1
        except (OSError, ValueError, SyntaxError) as exc:
            _fail(path, f"not a readable PNG ({exc})", "replace or remove the file")
        if image.ndim == 3:  # RGB(A): the mean of the colour channels, alpha dropped
            image = image[..., :3].mean(axis=-1)
        if image.shape != (28, 28):
            _fail(path, f"a {image.shape[1]} x {image.shape[0]} image",
                  "resize it to 28 x 28 pixels (white on black, as the training images)")
        images.append(image)
    return [str(p) for p in files], image_pixels(np.stack(images).astype(np.float32), folder)


def read_images(path: Path) -> tuple[list[str], np.ndarray]:
    """(source of each image, pixels 0..255 [N, 28, 28])."""
    from rnnexp.data.idx import IMAGES_MAGIC, read_idx
    from rnnexp.errors import DataError

    if path.is_dir():
        return read_png_folder(path)
    if path.suffix == ".npy":
        array = load_npy(path)
        return [str(path)] * (1 if array.ndim == 2 else len(array)), image_pixels(array, path)
    try:
        images = read_idx(path, IMAGES_MAGIC)
    except DataError as exc:
        _fail(path, f"not an IDX images file ({str(exc).removeprefix(f'{path}: ')})")
    return [str(path)] * len(images), image_pixels(images, path)


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)  # no pickled objects: a .npy is data, never code
    except (OSError, ValueError) as exc:
        _fail(path, f"not a readable .npy array ({exc})", "save it with numpy.save(path, array)")


def read_sequences(path: Path, task) -> tuple[list[str], np.ndarray]:
    """A synthetic task's inputs as float32 [N, T, F]."""
    if path.suffix != ".npy" or path.is_dir():
        _fail(path, "not a .npy file", f"input= takes a .npy array [N, T, {task.input_size}] of inputs for this task")
    array = load_npy(path)
    if array.ndim not in (2, 3) or array.shape[-1] != task.input_size or 0 in array.shape:
        _fail(path, f"array of shape {list(array.shape)}",
              f"this model reads [N, T, {task.input_size}] or [T, {task.input_size}] (T = {task.seq_len} when trained)")
    array = array.reshape(-1, *array.shape[-2:])
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        _fail(path, "holds non-numbers or non-finite values", "give finite numbers")
    return [str(path)] * len(array), array.astype(np.float32)


def predict_rows(trained, input_path: Path) -> tuple[list[str], list[list]]:
    """CSV header and rows of the model's predictions on input_path."""
    import torch

    task = trained.datamodule.task
    preprocessing = None
    if hasattr(trained.datamodule, "saved_preprocessing"):  # an image task
        if not trained.preprocessing_saved:  # an old checkpoint: from its training files (a warning)
            trained.prepare_data()
        preprocessing = trained.datamodule.saved_preprocessing or trained.datamodule.preprocessing
        sources, pixels = read_images(input_path)
        inputs = preprocessing.sequences(pixels)
    else:
        sources, array = read_sequences(input_path, task)
        inputs = torch.from_numpy(array)
    seen: dict[str, int] = {}
    index = []  # the position of each item within its source file
    for source in sources:
        index.append(seen.get(source, 0))
        seen[source] = index[-1] + 1
    with torch.no_grad():
        outputs = torch.cat([trained.module(batch)[0] for batch in inputs.split(1000)])

    classes = task.output_size
    names = list(preprocessing.class_names) if preprocessing is not None else [str(c) for c in range(classes)]
    prob_columns = [f"prob_{c}" for c in range(classes)]
    rows = []
    if task.kind == "classify_last":
        probs = torch.softmax(outputs, dim=-1)
        header = ["source", "index", "predicted", "class_name", *prob_columns]
        for i, p in enumerate(probs.tolist()):
            best = int(np.argmax(p))
            rows.append([sources[i], index[i], best, names[best], *(f"{v:.6f}" for v in p)])
    elif task.kind == "regress_last":
        header = ["source", "index", "prediction"]
        rows = [[sources[i], index[i], f"{v:.6g}"] for i, v in enumerate(outputs.tolist())]
    elif task.kind == "regress_each":
        header = ["source", "index", "step", "prediction"]
        rows = [[sources[i], index[i], t + 1, f"{v:.6g}"] for i, seq in enumerate(outputs.tolist())
                for t, v in enumerate(seq)]
    else:  # classify_each
        probs = torch.softmax(outputs, dim=-1)
        header = ["source", "index", "step", "predicted", *prob_columns]
        rows = [[sources[i], index[i], t + 1, int(np.argmax(p)), *(f"{v:.6f}" for v in p)]
                for i, seq in enumerate(probs.tolist()) for t, p in enumerate(seq)]
    return header, rows


def main(argv: list[str] | None = None) -> int:
    from rnnexp.errors import RnnexpError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0 if args else 2
    given = dict(a.split("=", 1) for a in args if "=" in a)
    unknown = [a for a in args if "=" not in a or a.split("=", 1)[0] not in ("ckpt_path", "input", "out")]
    if unknown or "ckpt_path" not in given or "input" not in given:
        print(USAGE, end="", file=sys.stderr)
        print(f"rnnexp-predict: error: expected ckpt_path=... input=... [out=...], got {args}", file=sys.stderr)
        return 2
    input_path, out = Path(given["input"]), Path(given.get("out", "predictions.csv"))
    try:
        if not input_path.exists():
            from rnnexp.errors import DataError

            raise DataError(f"input={given['input']!r}: no such file or folder; {INPUT_FORMS}")
        from rnnexp.inference import load_trained

        header, rows = predict_rows(load_trained(given["ckpt_path"], []), input_path)
    except RnnexpError as exc:
        if os.environ.get("RNNEXP_DEBUG"):
            raise
        print(f"rnnexp-predict: error: {exc}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    print(f"{len(rows)} predictions written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
