#!/usr/bin/env bash
# The README's "LSTM-128 + Adam on row-by-row Fashion-MNIST in 5 epochs" numbers: the tuned preset
# and the untuned default (Adam 1e-3, constant lr) side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-outputs/readme}
.venv/bin/rnnexp-train experiment=fashion_lstm paths.output_root="$ROOT" trainer.enable_progress_bar=false
.venv/bin/python scripts/records_table.py "$ROOT"
