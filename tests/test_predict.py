"""rnnexp-predict on inputs the tests write themselves: PNGs, .npy arrays and IDX files give the
same predictions, those predictions score what rnnexp-eval scores, and bad input is one error
naming the file and the fix. Synthetic tasks: the regression and per-step outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import compose_config
from test_data import write_idx, write_test_dir
from test_eval_test_dir import trained_checkpoint

from rnnexp import evaluate, predict
from rnnexp.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from rnnexp.data.sources import load_bundled


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return trained_checkpoint(tmp_path_factory)


def predictions(checkpoint: Path, source: Path, out: Path) -> list[dict]:
    assert predict.main([f"ckpt_path={checkpoint}", f"input={source}", f"out={out}"]) == 0
    with open(out) as f:
        return list(csv.DictReader(f))


def probabilities(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r[f"prob_{c}"]) for c in range(10)] for r in rows])


@pytest.mark.slow
def test_png_npy_and_idx_inputs_give_the_same_predictions(checkpoint, tmp_path):
    images = load_bundled("mnist").test_images[:12]
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, image in enumerate(images):  # grey as RGB, each channel the pixel (uint8: kept exactly)
        matplotlib.image.imsave(pngs / f"digit{i:02d}.png", np.stack([image] * 3, axis=-1))
    np.save(tmp_path / "uint8.npy", images)
    np.save(tmp_path / "float.npy", images.astype(np.float32) / 255.0)
    write_idx(tmp_path / "images-idx3-ubyte.gz", images, IMAGES_MAGIC)

    by_png = predictions(checkpoint, pngs, tmp_path / "png.csv")
    assert [r["source"] for r in by_png] == [str(pngs / f"digit{i:02d}.png") for i in range(12)]
    assert {r["index"] for r in by_png} == {"0"}
    assert list(by_png[0]) == ["source", "index", "predicted", "class_name", *[f"prob_{c}" for c in range(10)]]
    reference = probabilities(by_png)
    assert np.allclose(reference.sum(axis=1), 1.0, atol=1e-5)
    assert [int(r["predicted"]) for r in by_png] == reference.argmax(axis=1).tolist()
    for name in ("uint8.npy", "float.npy", "images-idx3-ubyte.gz"):
        rows = predictions(checkpoint, tmp_path / name, tmp_path / f"{name}.csv")
        assert [r["index"] for r in rows] == [str(i) for i in range(12)], name
        assert [r["predicted"] for r in rows] == [r["predicted"] for r in by_png], name
        np.testing.assert_allclose(probabilities(rows), reference, atol=2e-6, err_msg=name)
    # a single image [28, 28] is one row
    np.save(tmp_path / "one.npy", images[3])
    assert predictions(checkpoint, tmp_path / "one.npy", tmp_path / "one.csv")[0]["predicted"] == by_png[3]["predicted"]


@pytest.mark.slow
def test_predictions_score_what_rnnexp_eval_scores(checkpoint, tmp_path, capsys):
    """The checkpoint's preprocessing in both: the accuracy of the predicted classes on an IDX
    test set equals rnnexp-eval's test/acc on the same files."""
    raw = load_bundled("mnist")
    test_dir = write_test_dir(tmp_path / "t10k", raw.test_images, raw.test_labels)
    rows = predictions(checkpoint, test_dir / "t10k-images-idx3-ubyte.gz", tmp_path / "all.csv")
    accuracy = np.mean([int(r["predicted"]) == label for r, label in zip(rows, raw.test_labels, strict=True)])
    capsys.readouterr()
    assert evaluate.main([f"ckpt_path={checkpoint}", f"data.test_dir={test_dir}"]) == 0
    assert json.loads(capsys.readouterr().out)["test/acc"] == pytest.approx(accuracy)
    assert {r["class_name"] for r in rows} <= {str(d) for d in range(10)}


@pytest.mark.slow
@pytest.mark.parametrize("make,expected", [
    (lambda p: matplotlib.image.imsave(p / "big.png", np.zeros((30, 28)), cmap="gray") or p,
     "big.png: a 28 x 30 image; resize it to 28 x 28 pixels"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "a folder without .png files"),
    (lambda p: np.save(p / "flat.npy", np.zeros((4, 784), np.uint8)) or p / "flat.npy",
     "flat.npy: array of shape [4, 784], not [N, 28, 28] or [28, 28]"),
    (lambda p: np.save(p / "f.npy", np.full((2, 28, 28), 7.0)) or p / "f.npy",
     "f.npy: float pixels from 7 to 7, not 0..1; scale float images to 0..1"),
    (lambda p: write_idx(p / "labels-idx1-ubyte", np.zeros(5, np.uint8), LABELS_MAGIC),
     "labels-idx1-ubyte: not an IDX images file (magic number 0x00000801"),
    (lambda p: (p / "notes.txt").write_text("hello") and p / "notes.txt", "notes.txt: not an IDX images file"),
    (lambda p: p / "missing.npy", "input='"),
])
def test_bad_input_is_one_error_naming_the_file_and_the_fix(checkpoint, tmp_path, capsys, make, expected):
    source = make(tmp_path)
    assert predict.main([f"ckpt_path={checkpoint}", f"input={source}", f"out={tmp_path / 'p.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnexp-predict: error: ") and expected in err[0], err
    assert not (tmp_path / "p.csv").exists()


def train_synthetic(tmp_path: Path, overrides: list[str]) -> Path:
    from rnnexp.training import train

    record = train(compose_config(overrides + ["debug=fast", "threads=1"], output_dir=tmp_path / "run", shrink=False))
    return Path(record["best"]["checkpoint"])


@pytest.mark.slow
def test_synthetic_tasks_give_regression_and_per_step_outputs(tmp_path):
    from rnnexp.inference import load_trained

    adding = train_synthetic(tmp_path / "adding", ["data=adding", "data.seq_len=10", "cell=gru"])
    x = np.random.default_rng(0).random((5, 10, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = predictions(adding, tmp_path / "x.npy", tmp_path / "adding.csv")
    assert list(rows[0]) == ["source", "index", "prediction"] and len(rows) == 5
    model = load_trained(str(adding), []).module
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[0]
    np.testing.assert_allclose([float(r["prediction"]) for r in rows], expected.numpy(), rtol=1e-5)
    # a test set of IDX images means nothing to the adding problem: refused, naming the key
    assert evaluate.main([f"ckpt_path={adding}", f"data.test_dir={tmp_path}"]) == 2

    copy = train_synthetic(tmp_path / "copy", ["data=copy_memory", "data.seq_len=5", "model.hidden_size=16"])
    tokens = np.eye(10, dtype=np.float32)[np.random.default_rng(1).integers(0, 10, size=(2, 25))]
    np.save(tmp_path / "tokens.npy", tokens)
    rows = predictions(copy, tmp_path / "tokens.npy", tmp_path / "copy.csv")
    assert len(rows) == 2 * 25 and [int(r["step"]) for r in rows[:25]] == list(range(1, 26))
    assert list(rows[0])[:4] == ["source", "index", "step", "predicted"] and "prob_8" in rows[0] and "prob_9" not in rows[0]
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in range(9)) - 1) < 1e-4 for r in rows)

    np.save(tmp_path / "wrong.npy", np.zeros((2, 25, 3), np.float32))
    assert predict.main([f"ckpt_path={copy}", f"input={tmp_path / 'wrong.npy'}", f"out={tmp_path / 'w.csv'}"]) == 2


def test_the_command_line_answers_usage_without_loading_torch(tmp_path):
    """`python -m rnnexp.predict` (the rnnexp-predict entry point): --help, and a missing input= is
    a usage error, both before torch is imported."""
    run = [sys.executable, "-m", "rnnexp.predict"]
    shown = subprocess.run([*run, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: rnnexp-predict ckpt_path=")
    missing = subprocess.run([*run, "ckpt_path=x.ckpt"], check=False, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("rnnexp-predict: error: expected ckpt_path=... input=...")
