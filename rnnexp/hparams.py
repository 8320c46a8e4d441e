"""The flat, typed hparams every run logs to TensorBoard.

TensorBoard's HParams table shows runs side by side only when they log the same keys with the
same types. So the schema is fixed here: one key per swept axis, named as on the command line,
each with its type; a key that does not apply to a run gets 0 or "none", never a missing value.

What TensorBoard shows without a click: its HParams tab ticks the first five hparams of the
experiment summary and its first five metrics. The server orders the hparams by (`differs` first,
then name), the page keeps that order (tensorboard/plugins/hparams/backend_context.py
`experiment_from_metadata`; the query pane's `_computeHparams`). So the keys a sweep varies are
declared with `differs` set, and the only metrics declared are the two hp/ ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from rnnexp.sweep_naming import parse_overrides

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
    # flushed denormals can change a run's numbers (in their last bits), unlike threads or profiling
    "flush_denormal": (bool, "flush_denormal", True),
}
# Facts known only once the run is built, same rule: always present, always this type.
# `group`: the run's overrides without the seed (rnnexp.seed_stats.group_name, as rnnexp-compare's
# group column): runs that differ only in their seed share it, so TensorBoard can group them.
RUNTIME_KEYS: dict[str, type] = {"data.task": str, "data.seq_len": int, "data.source_used": str,
                                 "model.num_params": int, "group": str}


def flat_hparams(cfg: DictConfig, runtime: dict) -> dict:
    flat = {}
    for key, (kind, path, missing) in SCHEMA.items():
        value = OmegaConf.select(cfg, path, default=None)
        flat[key] = kind(missing if value is None else value)
    for key, kind in RUNTIME_KEYS.items():
        flat[key] = kind(runtime.get(key, "none" if kind is str else 0))
    return flat


def sweep_hparams(flat: dict, varying_keys: Sequence[str], overrides: Sequence[str]) -> tuple[dict, list[str]]:
    """`flat` with a column for each key the run's sweep varies, and the names of those columns.

    A swept key is its own column when the schema has it (`model.bidirectional`), the group's name
    when it picks a config (`cell` -> `cell.name`); any other key gets a string column holding the
    value its override gave, e.g. `trainer.accumulate_grad_batches` -> "4" (the same type in every
    job of the sweep, whatever the values).
    """
    flat = dict(flat)
    given = parse_overrides(overrides)
    columns = []
    for key in varying_keys:
        column = f"{key}.name" if key not in flat and f"{key}.name" in flat else key
        if column not in flat:
            flat[column] = str(given.get(key, "none"))
        if column not in columns:
            columns.append(column)
    if "seed" in varying_keys and "group" in flat:
        columns.append("group")  # a seed sweep is read by group: show it beside the seed
    return flat, columns


def hp_metric_names(metric: str) -> list[str]:
    """The HParams dashboard's metric columns; their values are logged as ordinary scalars."""
    return [f"hp/val_{metric}_best", f"hp/test_{metric}"]


def write_hparams_summary(writer, hparams: dict, metric_names: list[str], differs: Sequence[str] = ()) -> None:
    """Write the HParams plugin's experiment and session-start summaries, with no metric values.

    `differs`: the hparams the sweep varies (sweep_hparams); TensorBoard shows them first, ticked.

    Lightning's TensorBoardLogger.log_hyperparams would also log each metric once with a dummy
    value (hence the familiar hp_metric = -1), and torch's `hparams()` turns bools into numbers;
    here the types are kept and the metric columns are only declared: their real values arrive as
    ordinary scalars as the run logs them.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    def data_type(value):
        if isinstance(value, bool):
            return api_pb2.DATA_TYPE_BOOL
        if isinstance(value, (int, float)):
            return api_pb2.DATA_TYPE_FLOAT64
        return api_pb2.DATA_TYPE_STRING

    unknown = sorted(set(differs) - set(hparams))
    if unknown:
        raise ValueError(f"differs names {unknown}, which are not among the hparams")
    order = [*differs, *(k for k in hparams if k not in differs)]
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=k, type=data_type(hparams[k]), differs=k in differs) for k in order],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metric_names])
    session_start = plugin_data_pb2.SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, bool):
            session_start.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            session_start.hparams[key].number_value = value
        else:
            session_start.hparams[key].string_value = str(value)

    # SummaryWriter's public file_writer (what its own add_hparams writes through); None once closed
    file_writer = writer.file_writer
    if file_writer is None:
        raise ValueError("write_hparams_summary needs an open SummaryWriter (this one is closed)")
    for tag, data in ((metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
                      (metadata.SESSION_START_INFO_TAG,
                       plugin_data_pb2.HParamsPluginData(session_start_info=session_start))):
        summary = Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data),
                                               tensor=TensorProto(dtype="DT_FLOAT"))])
        file_writer.add_summary(summary)
    file_writer.flush()
