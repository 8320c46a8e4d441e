#!/usr/bin/env bash
# The runs behind the README's "Results" table for the seed presets and the default model.
# Usage: scripts/foundation_results.sh [output_root]   (default outputs/readme)
# Needs Fashion-MNIST (apt-get install dataset-fashion-mnist). Takes ~15 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-outputs/readme}
TRAIN=.venv/bin/rnnexp-train
COMMON=(paths.output_root="$ROOT" trainer.enable_progress_bar=false)

$TRAIN "${COMMON[@]}" data.dataset=fashion_mnist trainer.max_epochs=5 name=lstm_adam_fashion_5ep
$TRAIN "${COMMON[@]}" experiment=seed_lstm data.dataset=fashion_mnist
$TRAIN "${COMMON[@]}" experiment=seed_bilstm data.dataset=fashion_mnist
$TRAIN "${COMMON[@]}" experiment=seed_lstm_adam data.dataset=fashion_mnist
$TRAIN "${COMMON[@]}" experiment=seed_lstm data.source=bundled name=seed_lstm_bundled_mnist
$TRAIN -m "${COMMON[@]}" cell=rnn,lstm,gru model.bidirectional=false,true trainer.max_epochs=1 \
    data.dataset=fashion_mnist hydra.sweep.dir="$ROOT/multirun/six_cells"
.venv/bin/python scripts/records_table.py "$ROOT"
