"""TensorBoard across a sweep: every run declares the same typed hparams, and TensorBoard itself
serves the sweep's runs with their hparams and real hp/ metric values (not hp_metric = -1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.plugins.hparams import metadata
from test_compare import CELLS, job_dirs, shared_sweep
from test_figures import ADDING_SHRUNK

from rnnexp.hparams import sweep_hparams, write_hparams_summary
from rnnexp.training import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from hparams_page import TensorBoard  # the server the browser test and the README screenshot use too


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return shared_sweep(tmp_path_factory)


def logged_hparams(run_dir: Path) -> dict[str, str]:
    """hparam name -> the kind of value TensorBoard reads for it (number_value, string_value, bool_value)."""
    events = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    return {name: value.WhichOneof("kind") for name, value in start.hparams.items()}


def record_types(run_dir: Path) -> dict[str, str]:
    hparams = json.loads((run_dir / "metrics.json").read_text())["hparams"]
    return {name: type(value).__name__ for name, value in hparams.items()}


@pytest.mark.slow
def test_runs_of_different_cells_and_tasks_log_the_same_typed_hparams(sweep, make_cfg):
    runs = job_dirs(sweep)
    assert len(runs) == len(CELLS)
    adding = Path(train(make_cfg(ADDING_SHRUNK + ["cell=lstm"], shrink=False))["run_dir"])
    runs.append(adding)

    in_events = [logged_hparams(run) for run in runs]
    in_records = [record_types(run) for run in runs]
    assert all(kinds == in_events[0] for kinds in in_events), "TensorBoard would split the HParams table"
    assert all(types == in_records[0] for types in in_records)
    assert in_records[0].keys() == in_events[0].keys()
    # the axes that differ across these runs are among them, with the types the dashboard filters by
    assert in_events[0]["cell.name"] == "string_value" and in_events[0]["data.task"] == "string_value"
    assert in_events[0]["model.bidirectional"] == "bool_value"
    assert in_events[0]["optimizer.lr"] == in_events[0]["data.seq_len"] == "number_value"
    tasks = {json.loads((run / "metrics.json").read_text())["hparams"]["data.task"] for run in runs}
    assert tasks == {"classify_last", "regress_last"}


@pytest.mark.slow
def test_tensorboard_serves_every_run_with_hparams_and_metric_values(sweep, tmp_path):
    records = {d.name: json.loads((d / "metrics.json").read_text()) for d in job_dirs(sweep)}
    groups_request = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                      "colParams": [{"hparam": "cell.name", "order": "ORDER_ASC"},
                                    {"metric": {"group": "", "tag": "hp/val_acc_best"}},
                                    {"metric": {"group": "", "tag": "hp/test_acc"}}]}
    with open(tmp_path / "tensorboard.log", "w") as log, TensorBoard(sweep, log) as board:
        groups = board.wait_for_runs(len(records), request=groups_request)
        experiment = board.post("experiment", {"experimentName": ""})

    record = next(iter(records.values()))
    types = {info["name"]: info["type"] for info in experiment["hparamInfos"]}
    assert set(types) == set(record["hparams"])
    assert types["cell.name"] == "DATA_TYPE_STRING" and types["model.bidirectional"] == "DATA_TYPE_BOOL"
    assert types["optimizer.lr"] == "DATA_TYPE_FLOAT64"
    assert {info["name"]["tag"] for info in experiment["metricInfos"]} == {"hp/val_acc_best", "hp/test_acc"}

    # the swept key is declared as differing: TensorBoard's HParams tab shows it first, ticked
    differs = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
    assert differs == ["cell.name"] and experiment["hparamInfos"][0]["name"] == "cell.name"
    # each run named by the swept key only (not debug=fast, data.source=bundled, hydra/launcher=joblib)
    assert {group["name"] for group in groups} == set(records) == {f"cell={cell}" for cell in CELLS}
    assert [group["hparams"]["cell.name"] for group in groups] == sorted(CELLS)  # ORDER_ASC by cell
    for group in groups:
        record = records[group["name"]]
        assert group["hparams"]["cell.name"] == record["hparams"]["cell.name"]
        assert group["hparams"]["model.num_params"] == record["num_params"]
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert set(values) == {"hp/val_acc_best", "hp/test_acc"}  # no hp_metric placeholder
        assert values["hp/val_acc_best"] == pytest.approx(record["metrics"]["hp/val_acc_best"], abs=1e-6)
        assert values["hp/test_acc"] == pytest.approx(record["metrics"]["test/acc"], abs=1e-6)
        assert 0.0 <= values["hp/test_acc"] <= 1.0


def test_swept_keys_become_columns_declared_as_differing(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    flat = {"bptt.k1": 0, "cell.name": "gru", "model.bidirectional": True, "optimizer.lr": 0.01}
    job = ["cell=gru", "model.bidirectional=True", "trainer.accumulate_grad_batches=4", "debug=fast"]
    hparams, swept = sweep_hparams(flat, ["model.bidirectional", "cell", "trainer.accumulate_grad_batches"], job)
    # a group picks its config by name; a key outside the schema gets its override's text, as a string
    assert swept == ["model.bidirectional", "cell.name", "trainer.accumulate_grad_batches"]
    assert hparams == {**flat, "trainer.accumulate_grad_batches": "4"} and "debug" not in hparams
    assert sweep_hparams(flat, [], job) == (flat, [])

    writer = SummaryWriter(str(tmp_path))
    write_hparams_summary(writer, hparams, ["hp/val_acc_best", "hp/test_acc"], swept)
    with pytest.raises(ValueError, match="seed"):
        write_hparams_summary(writer, hparams, ["hp/val_acc_best"], ["seed"])
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={TENSORS: 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(content)
    declared = {info.name: info.differs for info in experiment.hparam_infos}
    assert declared == {"model.bidirectional": True, "cell.name": True, "trainer.accumulate_grad_batches": True,
                        "bptt.k1": False, "optimizer.lr": False}
    assert [m.name.tag for m in experiment.metric_infos] == ["hp/val_acc_best", "hp/test_acc"]


def test_a_seed_sweep_shows_each_runs_seed_group_beside_the_seed(make_cfg):
    from rnnexp.hparams import flat_hparams
    from rnnexp.seed_stats import group_name

    runtime = {"group": group_name(["cell=gru", "seed=3", "debug=fast"])}
    flat = flat_hparams(make_cfg(["cell=gru", "seed=3"]), runtime)
    # the seed's runs share the group: the overrides without the seed, as rnnexp-compare groups them
    assert flat["group"] == group_name(["seed=4", "debug=fast", "cell=gru"]) == "cell=gru,debug=fast"
    _, swept = sweep_hparams(flat, ["cell", "seed"], ["cell=gru", "seed=3"])
    assert swept == ["cell.name", "seed", "group"]
    _, swept = sweep_hparams(flat, ["cell"], ["cell=gru"])
    assert swept == ["cell.name"]  # no seed swept: the group says nothing the cell column does not
    assert flat_hparams(make_cfg([]), {})["group"] == "none"  # always present, always a string
