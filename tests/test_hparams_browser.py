"""TensorBoard's HParams tab, loaded in a real (headless) Chromium over a real sweep, opens on the
comparison the sweep was made for: its swept keys and the two hp/ metrics are among the columns
shown without a click, and the runs carry the short names (the swept keys only)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from devtools import BrowserUnavailable, Chromium
from hparams_page import TensorBoard, open_hparams

CONSTANT = ["debug=fast", "data.source=bundled", "threads=1", "trainer.max_epochs=1", "callbacks.test_figures.enabled=false"]
JOBS = {"cell=gru,model.bidirectional=false": ("gru", "false"), "cell=gru,model.bidirectional=true": ("gru", "true"),
        "cell=rnn,model.bidirectional=false": ("rnn", "false"), "cell=rnn,model.bidirectional=true": ("rnn", "true")}


@pytest.fixture
def browser():
    with ExitStack() as stack:
        try:
            chromium = stack.enter_context(Chromium())
        except BrowserUnavailable as exc:  # only a browser that cannot start skips; a failure later fails
            pytest.skip(str(exc))
        yield chromium


@pytest.mark.slow
@pytest.mark.browser
def test_hparams_tab_opens_on_the_swept_keys_and_hp_metrics_with_short_run_names(browser, venv_bin, tmp_path):
    sweep = tmp_path / "sweep"
    # model.bidirectional is not among the first five hparams by name (bptt.*, cell.*): only the
    # sweep's own summary can bring it forward
    done = subprocess.run([str(venv_bin / "rnnexp-train"), "-m", "cell=rnn,gru", "model.bidirectional=false,true",
                           *CONSTANT, f"hydra.sweep.dir={sweep}", f"paths.output_root={tmp_path}"],
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file()) == sorted(JOBS)

    with open(tmp_path / "tensorboard.log", "w") as log, TensorBoard(sweep, log) as board:
        board.wait_for_runs(len(JOBS))
        page = open_hparams(browser, board.url, runs=len(JOBS))

    metrics = ["hp/val_acc_best", "hp/test_acc"]
    header = page["header"]
    assert header[0] == "Trial ID"
    # the swept keys are the first hparam columns, both hp metrics are shown, nothing is cut
    hparams = [title for title in header[1:] if title not in metrics and title != "Show Metrics"]
    assert hparams[:2] == ["cell.name", "model.bidirectional"], header
    assert all(metric in header for metric in metrics), header
    assert {"cell.name", "model.bidirectional", *metrics} <= set(page["ticked"])

    rows = {row[0]: dict(zip(header, row)) for row in page["rows"]}
    assert set(rows) == set(JOBS)  # the constant overrides are in no run name
    for name, (cell, bidirectional) in JOBS.items():
        assert (rows[name]["cell.name"], rows[name]["model.bidirectional"]) == (cell, bidirectional)
        for metric in metrics:
            assert 0.0 <= float(rows[name][metric]) <= 1.0, (name, metric, rows[name][metric])
