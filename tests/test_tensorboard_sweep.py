"""TensorBoard across a sweep: every run declares the same typed hparams, and TensorBoard itself
serves the sweep's runs with their hparams and real hp/ metric values (not hp_metric = -1)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.plugins.hparams import metadata
from test_compare import CELLS, job_dirs, shared_sweep
from test_figures import ADDING_SHRUNK

from rnnexp.training import train


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, route: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/{route}",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def query_tensorboard(logdir: Path, log, groups_request: dict, expected: int) -> tuple[list, dict]:
    """Start TensorBoard on loopback, wait (bounded) until it serves `expected` session groups,
    return them and the experiment; the server is stopped whatever happens."""
    port = free_port()
    # load_fast=false: the Python reader, no separate data-server binary to wait for
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, groups = time.monotonic() + 90, []
        while len(groups) < expected:  # the server starts, then loads the events in the background
            assert server.poll() is None, f"TensorBoard exited with {server.returncode}; see {log.name}"
            assert time.monotonic() < deadline, f"TensorBoard did not serve {expected} runs within 90 s"
            time.sleep(1)
            try:
                groups = post(port, "session_groups", groups_request).get("sessionGroups", [])
            except (urllib.error.URLError, ConnectionError):
                continue
        return groups, post(port, "experiment", {"experimentName": ""})
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_tensorboard_serves_every_run_with_hparams_and_metric_values(sweep, tmp_path):
    records = {d.name: json.loads((d / "metrics.json").read_text()) for d in job_dirs(sweep)}
    groups_request = {"experimentName": "", "startIndex": 0, "sliceSize": 100,
                      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                      "colParams": [{"hparam": "cell.name", "order": "ORDER_ASC"},
                                    {"metric": {"group": "", "tag": "hp/val_acc_best"}},
                                    {"metric": {"group": "", "tag": "hp/test_acc"}}]}
    with open(tmp_path / "tensorboard.log", "w") as log:
        groups, experiment = query_tensorboard(sweep, log, groups_request, expected=len(records))

    record = next(iter(records.values()))
    types = {info["name"]: info["type"] for info in experiment["hparamInfos"]}
    assert set(types) == set(record["hparams"])
    assert types["cell.name"] == "DATA_TYPE_STRING" and types["model.bidirectional"] == "DATA_TYPE_BOOL"
    assert types["optimizer.lr"] == "DATA_TYPE_FLOAT64"
    assert {info["name"]["tag"] for info in experiment["metricInfos"]} == {"hp/val_acc_best", "hp/test_acc"}

    assert {group["name"] for group in groups} == set(records)  # each run named by its overrides
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
