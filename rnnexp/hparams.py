"""The flat, typed hparams every run logs to TensorBoard.

TensorBoard's HParams table shows runs side by side only when they log the same keys with the
same types. So the schema is fixed here: one key per swept axis, named as on the command line,
each with its type; a key that does not apply to a run gets 0 or "none", never a missing value.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

# key -> (type, config path it is read from, value when the config has no such key)
SCHEMA: dict[str, tuple[type, str, object]] = {
    "cell.name": (str, "cell.name", "none"),
    "cell.nonlinearity": (str, "cell.nonlinearity", "none"),
    "cell.forget_bias": (float, "cell.forget_bias", 0.0),
    "cell.recurrent_init": (str, "cell.recurrent_init", "none"),
    "model.hidden_size": (int, "model.hidden_size", 0),
    "model.num_layers": (int, "model.num_layers", 0),
    "model.bidirectional": (bool, "model.bidirectional", False),
    "model.dropout": (float, "model.dropout", 0.0),
    "model.readout": (str, "model.readout", "none"),
    "model.backend": (str, "model.backend", "none"),
    "model.compile": (bool, "model.compile", False),
    "optimizer.name": (str, "optimizer.name", "none"),
    "optimizer.lr": (float, "optimizer.lr", 0.0),
    "optimizer.weight_decay": (float, "optimizer.weight_decay", 0.0),
    "scheduler.name": (str, "scheduler.name", "none"),
    "bptt.name": (str, "bptt.name", "none"),
    "bptt.k1": (int, "bptt.k1", 0),
    "bptt.k2": (int, "bptt.k2", 0),
    "data.name": (str, "data.name", "none"),
    "data.dataset": (str, "data.dataset", "none"),
    "data.order": (str, "data.order", "none"),
    "data.batch_size": (int, "data.batch_size", 0),
    "trainer.max_epochs": (int, "trainer.max_epochs", 0),
    "trainer.max_steps": (int, "trainer.max_steps", 0),
    "trainer.gradient_clip_val": (float, "trainer.gradient_clip_val", 0.0),
    "seed": (int, "seed", 0),
}
# Facts known only once the run is built, same rule: always present, always this type.
RUNTIME_KEYS: dict[str, type] = {"data.task": str, "data.seq_len": int, "data.source_used": str,
                                 "model.num_params": int}


def flat_hparams(cfg: DictConfig, runtime: dict) -> dict:
    flat = {}
    for key, (kind, path, missing) in SCHEMA.items():
        value = OmegaConf.select(cfg, path, default=None)
        flat[key] = kind(missing if value is None else value)
    for key, kind in RUNTIME_KEYS.items():
        flat[key] = kind(runtime.get(key, "none" if kind is str else 0))
    return flat


def hp_metric_names(metric: str) -> list[str]:
    """The HParams dashboard's metric columns; their values are logged as ordinary scalars."""
    return [f"hp/val_{metric}_best", f"hp/test_{metric}"]


def write_hparams_summary(writer, hparams: dict, metric_names: list[str]) -> None:
    """Write the HParams plugin's three summaries without placeholder metric values.

    Lightning's TensorBoardLogger.log_hyperparams would also log each metric once with a dummy
    value (hence the familiar hp_metric = -1); here the columns are declared and the real values
    arrive as the run logs them.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    experiment, session_start, session_end = hparams_summary(hparams, {m: 0.0 for m in metric_names})
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
