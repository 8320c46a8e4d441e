"""rnnexp's Lightning callbacks, one module per concern.

    cadence.py          "every N optimizer steps" when one batch may make several steps
    checkpointing.py    last.ckpt (train start, every N steps or seconds, epoch ends, the end) and Ctrl-C
    resume.py           what a checkpoint must carry beyond Lightning's own state for an exact resume
    divergence.py       stop on a non-finite loss or weight; keep non-finite weights out of checkpoints
    progress.py         the progress bar and the tutorial's "Step N, Minibatch Loss=..." line
    test_figures.py     confusion matrix / prediction scatter of the test set, in TensorBoard and PNG
    gradient_flow.py    ||dLoss/ds_t|| for every time step t, as a heatmap through training
    run_probe.py        when a run was built, its first step started and ended, training ended (rnnexp-bench)
    fault_injection.py  kill the process at an exact step and stage (RNNEXP_FAULT; tests only)

Lightning's ModelCheckpoint writes the best checkpoint (conf/callbacks/default.yaml).
"""
