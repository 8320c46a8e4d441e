#!/usr/bin/env bash
# Where rnnexp's per-step cost over the plain loop goes: the interleaved epoch benchmark with the
# default run, then with no callbacks and no TensorBoard logger (Lightning's own loop around the
# same module). Quoted in README "Performance". Extra arguments go to rnnexp-bench (e.g. --steps 200).
set -euo pipefail
BENCH=".venv/bin/rnnexp-bench --only epoch --repeats ${REPEATS:-5} --out-dir ${OUT_DIR:-outputs/bench/breakdown}"
NO_CALLBACKS=()
for cb in checkpoint lr_monitor divergence_guard exact_resume periodic_checkpoint \
          test_figures gradient_flow step_printer progress_bar; do
  NO_CALLBACKS+=(--override="~callbacks.$cb")
done
echo "== default run"; $BENCH "$@"
echo "== no callbacks, no logger (Lightning's loop)"; $BENCH "$@" "${NO_CALLBACKS[@]}" --override='~logger.tensorboard' \
  --override='+trainer.enable_model_summary=false' --override='+trainer.enable_checkpointing=false'
