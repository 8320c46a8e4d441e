"""Pictures a run draws: the test-set confusion matrix / scatter, and gradient flow through time."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

from rnnexp.build import build_module
from rnnexp.callbacks.gradient_flow import gradient_norms_through_time, unrolled_encoder
from rnnexp.data.task import TaskSpec
from rnnexp.training import train

# the adding problem, small: make_cfg's shrink names data.source, which synthetic data has not
ADDING_SHRUNK = ["debug=fast", "threads=1", "data=adding", "data.seq_len=20", "data.train_size=512",
                 "data.val_size=200", "data.test_size=200"]


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={IMAGES: 0, SCALARS: 0})
    accumulator.Reload()
    return accumulator


def png_shape(path: Path) -> tuple:
    return matplotlib.image.imread(path).shape


@pytest.mark.parametrize("cell", ["rnn", "irnn", "lstm", "gru"])
def test_unrolled_encoder_computes_what_the_fused_encoder_computes(make_cfg, cell):
    # the gradient-flow callback differentiates this step-by-step copy: it must be the same function
    task = TaskSpec(kind="classify_last", input_size=3, output_size=4, seq_len=9)
    torch.manual_seed(0)
    module = build_module(make_cfg([f"cell={cell}", "model.num_layers=2", "model.hidden_size=8"]), task).eval()
    x = torch.randn(5, 9, 3)
    outputs, state, top_states = unrolled_encoder(module.encoder, x)
    expected_outputs, _ = module.encoder(x)
    torch.testing.assert_close(outputs, expected_outputs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.decode(outputs, state), module(x)[0], atol=1e-5, rtol=1e-5)
    assert len(top_states) == 9 and torch.equal(outputs[:, 3], top_states[3])


def test_tanh_rnn_gradient_vanishes_where_lstm_and_irnn_keep_it(make_cfg):
    """At initialisation, on 100 steps with the loss read at the last one: the share of the gradient
    that reaches step 1 is astronomically smaller for a tanh RNN than for an LSTM, and an IRNN
    (identity recurrence) keeps most of it."""
    task = TaskSpec(kind="regress_last", input_size=2, output_size=1, seq_len=100)
    x, y = torch.rand(16, 100, 2, generator=torch.Generator().manual_seed(0)), torch.rand(16)
    first_over_last = {}
    for cell in ("rnn", "lstm", "irnn"):
        torch.manual_seed(0)
        module = build_module(make_cfg([f"cell={cell}", "model.hidden_size=32"]), task).eval()
        g = gradient_norms_through_time(module, x, y)
        assert g.shape == (100,) and np.all(g >= 0)
        first_over_last[cell] = g[0] / g[-1]
    assert first_over_last["rnn"] < 1e-12
    assert first_over_last["rnn"] < 1e-6 * first_over_last["lstm"]
    assert first_over_last["irnn"] > 0.1


@pytest.mark.slow
def test_gradient_flow_logs_a_heatmap_as_wide_as_the_sequence(make_cfg):
    cfg = make_cfg(["cell=rnn", "callbacks.gradient_flow.every_n_steps=2"])
    record = train(cfg)
    run_dir = Path(record["run_dir"])
    accumulator = events(run_dir)
    images = accumulator.Images("grad_flow/heatmap")
    assert [image.step for image in images] == [2, 4]  # every 2 of the 4 steps
    assert images[-1].width == record["hparams"]["data.seq_len"] == 28
    assert images[-1].height == 2  # one row per record so far
    ratios = [s.value for s in accumulator.Scalars("grad_flow/first_over_last")]
    assert len(ratios) == 2 and all(0 < r < 1 for r in ratios)  # tanh RNN: step 1 gets less than step 28
    saved = np.load(run_dir / "figures" / "gradient_flow.npz")
    assert saved["norms"].shape == (2, 28) and list(saved["steps"]) == [2, 4]
    assert png_shape(run_dir / "figures" / "gradient_flow.png")[0] > 100


@pytest.mark.slow
def test_test_figures_confusion_matrix_for_classification(make_cfg):
    record = train(make_cfg(["model.hidden_size=16"]))
    run_dir = Path(record["run_dir"])
    assert png_shape(run_dir / "figures" / "confusion_test.png")[0] > 100
    (image,) = events(run_dir).Images("test/confusion")
    assert image.width > 100 and image.height > 100
    assert not (run_dir / "figures" / "gradient_flow.png").exists()  # off by default


@pytest.mark.slow
def test_test_figures_prediction_scatter_for_regression(make_cfg):
    record = train(make_cfg(ADDING_SHRUNK + ["model.hidden_size=16"], shrink=False))
    run_dir = Path(record["run_dir"])
    assert record["hparams"]["data.task"] == "regress_last"
    assert png_shape(run_dir / "figures" / "prediction_test.png")[0] > 100
    assert len(events(run_dir).Images("test/prediction_vs_target")) == 1
