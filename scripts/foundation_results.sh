#!/usr/bin/env bash
# The runs behind the README's results table (with scripts/tf_example_presets.sh and
# scripts/fashion_lstm_088.sh). Needs Fashion-MNIST (apt-get install dataset-fashion-mnist).
# Usage: scripts/foundation_results.sh [output_root]   (default outputs/readme)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-outputs/readme}
COMMON=(paths.output_root="$ROOT" trainer.enable_progress_bar=false)

# the default model (LSTM-128, Adam 1e-3, constant lr) for 5 epochs on Fashion-MNIST
.venv/bin/rnnexp-train "${COMMON[@]}" data.dataset=fashion_mnist trainer.max_epochs=5 name=lstm_adam_fashion_5ep
# the tutorial's first TensorFlow example, 10000 steps of plain gradient descent
.venv/bin/rnnexp-train "${COMMON[@]}" experiment=tf_example_lstm data.dataset=fashion_mnist
.venv/bin/python scripts/records_table.py "$ROOT"
