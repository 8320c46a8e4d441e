"""rnnexp-eval on a test set of its own (data.test_dir), with the preprocessing the checkpoint
carries: no training files read, the same scores as on the run's own test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from test_data import write_test_dir

from rnnexp import evaluate
from rnnexp.data.sources import load_bundled


def trained_checkpoint(tmp_path_factory) -> Path:
    """The best checkpoint of a shrunk bundled-MNIST run (LSTM, row order, first-128 accuracy on),
    trained once per session and shared with test_predict.py."""
    root = tmp_path_factory.getbasetemp() / "trained_for_inference"
    done = root / "done"
    if not done.is_file():
        shutil.rmtree(root, ignore_errors=True)
        from rnnexp.training import train

        record = train(compose_config(["evaluation.report_first_n=128", "trainer.max_epochs=2"], output_dir=root / "run"))
        done.write_text(record["best"]["checkpoint"])
    return Path(done.read_text())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return trained_checkpoint(tmp_path_factory)


def eval_json(args: list[str], capsys) -> dict:
    assert evaluate.main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_test_dir_scores_what_the_run_scored_on_the_same_images(checkpoint, tmp_path, capsys):
    raw = load_bundled("mnist")
    # the bundled test split, as IDX files in a folder of their own; data.source=local and an
    # empty data folder: training files cannot be found, so none is read
    test_dir = write_test_dir(tmp_path / "t10k", raw.test_images, raw.test_labels)
    own = eval_json([f"ckpt_path={checkpoint}", "data.source=bundled"], capsys)
    alone = eval_json([f"ckpt_path={checkpoint}", f"data.test_dir={test_dir}", "data.source=local",
                       f"data.data_dir={tmp_path / 'empty'}", "data.system_dirs.mnist=[]"], capsys)
    assert alone["test/acc"] == own["test/acc"] and alone["test/loss"] == pytest.approx(own["test/loss"])
    assert "test/acc_first128" in alone and alone["test/acc_first128"] == own["test/acc_first128"]

    # the first 128 images alone: test/acc there is test/acc_first128 of the whole set
    first = write_test_dir(tmp_path / "first128", raw.test_images[:128], raw.test_labels[:128], gz=False)
    head = eval_json([f"ckpt_path={checkpoint}", f"data.test_dir={first}"], capsys)
    assert head["test/acc"] == pytest.approx(own["test/acc_first128"])
    # the first 500 (debug=fast tested one batch of 500): what training itself reported
    first = write_test_dir(tmp_path / "first500", raw.test_images[:500], raw.test_labels[:500])
    record = json.loads((checkpoint.parents[1] / "metrics.json").read_text())
    head = eval_json([f"ckpt_path={checkpoint}", f"data.test_dir={first}"], capsys)
    assert head["test/acc"] == pytest.approx(record["metrics"]["test/acc"])


@pytest.mark.slow
def test_an_old_checkpoint_falls_back_to_the_training_files_or_says_why_it_cannot(checkpoint, tmp_path, capsys):
    """Written before the preprocessing was stored: only a permutation in its data state."""
    saved = torch.load(checkpoint, weights_only=True)
    saved["SequenceImageDataModule"] = {"permutation": []}
    old = tmp_path / "old.ckpt"
    torch.save(saved, old)
    raw = load_bundled("mnist")
    test_dir = write_test_dir(tmp_path / "t10k", raw.test_images, raw.test_labels)
    new = eval_json([f"ckpt_path={checkpoint}", f"data.test_dir={test_dir}"], capsys)
    # fallback: the run's data source still has its training files -> the same statistics, a warning
    assert eval_json([f"ckpt_path={old}", f"data.test_dir={test_dir}"], capsys)["test/acc"] == new["test/acc"]
    # no training files to be had: one error that says why they are needed and what to do
    assert evaluate.main([f"ckpt_path={old}", f"data.test_dir={test_dir}", "data.source=local",
                          f"data.data_dir={tmp_path / 'empty'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rnnexp-eval: error: {old} was written before rnnexp stored the preprocessing")
    assert "make them available" in err[-1] and "retrain" in err[-1]


@pytest.mark.slow
def test_a_bad_test_dir_is_one_error_naming_the_folder(checkpoint, tmp_path, capsys):
    assert evaluate.main([f"ckpt_path={checkpoint}", f"data.test_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"data.test_dir='{tmp_path}': no t10k-images-idx3-ubyte[.gz] or " in err[0]
