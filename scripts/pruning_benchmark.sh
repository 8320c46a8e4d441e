#!/usr/bin/env bash
# Issue 16's measurement: what pruning saves in a hyper-parameter search. Two 16-trial searches of
# conf/hparams_search/optuna.yaml's space on the bundled MNIST subset (3,600 training digits, 3
# epochs per trial, validation every half epoch), with the same TPE seed: one with the median
# pruner, one without. Prints their wall time, best validation accuracy and what they trained.
# Usage: scripts/pruning_benchmark.sh [out_dir] [n_trials]
#        (default outputs/bench/pruning/<date>_<time>, 16; SEED=<n> picks the sampler seed, default 0)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/bench/pruning/$(date +%Y-%m-%d_%H-%M-%S)}
TRIALS=${2:-16}
SEED=${SEED:-0}
mkdir -p "$OUT"
for PRUNER in median none; do
    START=$(date +%s.%N)
    # each search its own study (and SQLite file), so neither learns from the other
    .venv/bin/rnnexp-train -m hparams_search=optuna data.source=bundled threads=1 \
        trainer.max_epochs=3 trainer.val_check_interval=0.5 trainer.enable_progress_bar=false \
        hydra.sweeper.n_trials="$TRIALS" hydra.sweeper.sampler.seed="$SEED" hydra.sweeper.pruner="$PRUNER" \
        hydra.sweeper.study_name="pruner_$PRUNER" hydra.sweeper.storage="sqlite:///$OUT/$PRUNER.db" \
        paths.output_root="$OUT" hydra.sweep.dir="$OUT/$PRUNER" > "$OUT/$PRUNER.log" 2>&1 \
        || { tail -n 30 "$OUT/$PRUNER.log"; exit 1; }
    echo "$PRUNER $(date +%s.%N) $START" >> "$OUT/wall_times.txt"
done
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
import yaml
out = Path(sys.argv[1])
print(f"| pruner | wall time (s) | best hp/val_acc_best (trial) | trials completed / pruned | optimizer steps trained |")
print("|---|---|---|---|---|")
for line in (out / "wall_times.txt").read_text().split("\n"):
    if not line:
        continue
    pruner, end, start = line.split()
    results = yaml.safe_load((out / pruner / "optimization_results.yaml").read_text())
    runs = [json.loads(p.read_text()) for p in sorted((out / pruner).glob("*/metrics.json"))]
    steps = sum(r["global_step"] for r in runs)
    counts = results["trials"]
    print(f"| {pruner} | {float(end) - float(start):.0f} | {results['best_value']:.4f} ({results['best_trial']}) | "
          f"{counts.get('COMPLETE', 0)} / {counts.get('PRUNED', 0)} | {steps} |")
PY
