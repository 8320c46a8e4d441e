"""The values each categorical key accepts. Torch-free, so a bad command line is refused in
well under a second, before torch or Lightning are imported."""

CELL_NAMES = ("rnn", "irnn", "lstm", "gru")
BACKENDS = ("native", "explicit")
# Elman activations: torch's nn.RNN has only tanh and relu; the explicit cells have all four
ELMAN_NONLINEARITIES = {"native": ("tanh", "relu"), "explicit": ("tanh", "relu", "sigmoid", "identity")}
READOUTS = ("final_state", "last_output", "mean_output")
HEAD_INITS = ("default", "normal")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULERS = ("none", "cosine", "step", "plateau")
BPTT_MODES = ("full", "truncated", "seed_window")
DATASETS = ("mnist", "fashion_mnist")
SOURCES = ("auto", "local", "download", "bundled")
ORDERS = ("row", "pixel", "permuted")
PROFILERS = (None, "simple", "advanced", "pytorch")  # None: rnnexp.lit.profiler.NoProfiler
