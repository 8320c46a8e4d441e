#!/usr/bin/env bash
# The tutorial presets (experiment=tf_example_*) on row-by-row Fashion-MNIST, for the README's results table: two at a time
# with one thread each (2 cores). Usage: scripts/tf_example_presets.sh [output_root]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-outputs/readme}
COMMON=(paths.output_root="$ROOT" trainer.enable_progress_bar=false threads=1 data.dataset=fashion_mnist)
.venv/bin/rnnexp-train "${COMMON[@]}" experiment=tf_example_bilstm &
( .venv/bin/rnnexp-train "${COMMON[@]}" experiment=fashion_lstm &&
  .venv/bin/rnnexp-train "${COMMON[@]}" experiment=tf_example_lstm_adam ) &
wait
.venv/bin/python scripts/records_table.py "$ROOT"
