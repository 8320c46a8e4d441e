"""The values each categorical key accepts. Torch-free, so a bad command line is refused in
well under a second, before torch or Lightning are imported.

A key chosen by a config group (cell=..., optimizer=..., scheduler=..., bptt=...) takes the names
of that group's files in conf/: adding conf/cell/<name>.yaml adds the choice, nothing here."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def group_options(group: str) -> tuple[str, ...]:
    """The options of a config group: the names of its files, conf/<group>/<name>.yaml."""
    return tuple(sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml")))


CELL_NAMES = group_options("cell")
BACKENDS = ("native", "explicit")
# Elman activations: torch's nn.RNN has only tanh and relu; the explicit cells have all four
ELMAN_NONLINEARITIES = {"native": ("tanh", "relu"), "explicit": ("tanh", "relu", "sigmoid", "identity")}
READOUTS = ("final_state", "last_output", "mean_output")
HEAD_INITS = ("default", "normal")
OPTIMIZERS = group_options("optimizer")
SCHEDULERS = group_options("scheduler")
BPTT_MODES = group_options("bptt")
DATASETS = ("mnist", "fashion_mnist")
SOURCES = ("auto", "local", "download", "bundled")
ORDERS = ("row", "pixel", "permuted")
PROFILERS = (None, "simple", "advanced", "pytorch")  # None: rnnexp.lit.profiler.NoProfiler
# Lightning's trainer.precision: its names, their short aliases, and the aliases as integers
# (`trainer.precision=16` reaches the config as the integer 16)
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16)
DETERMINISTIC = (True, False, "warn")  # Lightning's trainer.deterministic
RECURRENT_INITS = ("default", "identity", "orthogonal")
METRIC_MODES = ("min", "max")
SCHEDULER_INTERVALS = ("epoch", "step")  # how often a scheduler steps
LR_LOGGING_INTERVALS = ("epoch", "step", None)  # Lightning's LearningRateMonitor

# The categorical keys of the config and the values each accepts (rnnexp.config_schema checks
# them, before anything is built). A key not listed takes any value of its type.
CHOICES_BY_KEY = {
    "cell.name": CELL_NAMES,
    "cell.recurrent_init": RECURRENT_INITS,
    "model.readout": READOUTS,
    "model.backend": BACKENDS,
    "model.head_init": HEAD_INITS,
    "optimizer.name": OPTIMIZERS,
    "scheduler.name": SCHEDULERS,
    "scheduler.interval": SCHEDULER_INTERVALS,
    "scheduler.mode": METRIC_MODES,
    "bptt.name": BPTT_MODES,
    "data.dataset": DATASETS,
    "data.source": SOURCES,
    "data.order": ORDERS,
    "data.metric_mode": METRIC_MODES,
    "trainer.profiler": PROFILERS,
    "trainer.precision": PRECISIONS,
    "trainer.deterministic": DETERMINISTIC,
    "callbacks.lr_monitor.logging_interval": LR_LOGGING_INTERVALS,
}
