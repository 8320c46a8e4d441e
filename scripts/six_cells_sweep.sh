#!/usr/bin/env bash
# Issue 2's sweep: rnn/lstm/gru x uni/bidirectional, 1 epoch of row-by-row Fashion-MNIST, two jobs
# at a time through the joblib launcher, then the ranked comparison.
# Usage: scripts/six_cells_sweep.sh [sweep_dir]   (default outputs/readme/multirun/six_cells)
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=${1:-outputs/readme/multirun/six_cells}
.venv/bin/rnnexp-train -m hydra/launcher=joblib hydra.launcher.n_jobs=2 \
    cell=rnn,lstm,gru model.bidirectional=false,true trainer.max_epochs=1 data.dataset=fashion_mnist \
    trainer.enable_progress_bar=false hydra.sweep.dir="$SWEEP"
.venv/bin/rnnexp-compare "$SWEEP" --by cell --hue model.bidirectional
