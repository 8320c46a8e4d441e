"""The main path, end to end on the real configs: compose -> train -> record -> TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rnnexp.hparams import RUNTIME_KEYS, SCHEMA
from rnnexp.training import train

TINY = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "model.hidden_size=16", "data.limit_train_samples=64"]


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "irnn", "lstm", "gru"])
def test_every_cell_direction_depth_trains_a_step_with_finite_loss(make_cfg, cell, bidirectional, num_layers):
    cfg = make_cfg([f"cell={cell}", f"model.bidirectional={str(bidirectional).lower()}",
                    f"model.num_layers={num_layers}", *TINY])
    record = train(cfg)
    assert record["status"] == "completed"
    assert record["global_step"] == 1
    assert math.isfinite(record["metrics"]["train/loss"])
    assert math.isfinite(record["metrics"]["test/loss"])


def test_short_training_on_bundled_mnist_beats_chance_by_far(make_cfg):
    # 2 epochs (226 steps) over the 3,600 bundled training digits: chance is 0.10.
    cfg = make_cfg(["data.limit_train_samples=0", "data.batch_size=32", "trainer.max_epochs=2",
                    "trainer.limit_train_batches=1.0", "trainer.limit_test_batches=1.0",
                    "trainer.limit_val_batches=1.0", "model.hidden_size=64"])
    record = train(cfg)
    assert record["metrics"]["test/acc"] > 0.6
    assert record["metrics"]["hp/val_acc_best"] > 0.6
    assert record["split_sizes"] == {"train": 3600, "val": 400, "test": 1000}


def test_metrics_json_holds_numbers_status_and_provenance(make_cfg):
    cfg = make_cfg()
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "completed"
    for key in ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc", "hp/val_acc_best", "hp/test_acc"):
        assert isinstance(record["metrics"][key], float), key
    assert record["optimized_metric"] == "hp/val_acc_best"
    assert record["optimized_value"] == record["metrics"]["hp/val_acc_best"]
    assert record["global_step"] == 4 and record["epochs"] == 1
    assert record["wall_time_s"] > 0
    assert record["versions"]["torch"] and record["versions"]["pytorch-lightning"]
    assert record["hparams"]["data.source_used"] == "bundled"
    assert Path(record["best"]["checkpoint"]).is_file()
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def _read_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars, hparams, metric_tags = {}, {}, []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.value for e in acc.Scalars(tag)]
        try:
            hparam_tags = acc.PluginTagToContent("hparams")
        except KeyError:  # this events file holds no hparams summary
            continue
        for tag, content in hparam_tags.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for key, value in data.session_start_info.hparams.items():
                    hparams[key] = value.WhichOneof("kind"), getattr(value, value.WhichOneof("kind"))
            if data.HasField("experiment"):
                metric_tags = [m.name.tag for m in data.experiment.metric_infos]
    return scalars, hparams, metric_tags


def test_tensorboard_events_hold_scalars_and_typed_hparams_with_real_hp_metrics(make_cfg):
    cfg = make_cfg()
    record = train(cfg)
    scalars, hparams, metric_tags = _read_events(Path(cfg.paths.output_dir))
    for tag in ("train/loss_step", "val/loss", "val/acc", "test/acc", "hp/val_acc_best", "hp/test_acc"):
        assert tag in scalars, tag
    assert scalars["hp/test_acc"][-1] == pytest.approx(record["metrics"]["hp/test_acc"])
    assert "hp_metric" not in scalars  # Lightning's -1 placeholder is gone
    assert sorted(metric_tags) == ["hp/test_acc", "hp/val_acc_best"]
    assert set(hparams) == set(SCHEMA) | set(RUNTIME_KEYS)
    assert hparams["cell.name"] == ("string_value", "lstm")
    assert hparams["model.bidirectional"] == ("bool_value", False)
    assert hparams["model.hidden_size"] == ("number_value", 128.0)
    assert hparams["flush_denormal"] == ("bool_value", True)


def test_unknown_cell_name_is_refused_with_the_valid_names(make_cfg):
    from rnnexp.errors import ConfigError

    cfg = make_cfg(["cell.name=elman"])
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "cell.name='elman'" in message
    for name in ("rnn", "irnn", "lstm", "gru"):
        assert name in message
    record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert record["status"] == "failed" and "cell.name" in record["error"]


def test_tf_example_lstm_preset_is_the_tensorflow_example(make_cfg):
    cfg = make_cfg(["experiment=tf_example_lstm"], shrink=False)
    assert cfg.cell.name == "lstm" and cfg.cell.forget_bias == 1.0
    assert cfg.model.hidden_size == 128 and cfg.model.readout == "last_output"
    assert cfg.model.head_init == "normal" and not cfg.model.bidirectional
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.001 and cfg.optimizer.momentum == 0.0
    assert cfg.data.batch_size == 128 and cfg.data.order == "row"
    assert cfg.trainer.max_steps == 10000 and cfg.callbacks.step_printer.every_n_steps == 200
    assert cfg.evaluation.report_first_n == 128
    bi = make_cfg(["experiment=tf_example_bilstm"], shrink=False)
    assert bi.model.bidirectional and bi.optimizer.name == "sgd" and bi.name == "tf_example_bilstm"
    adam = make_cfg(["experiment=tf_example_lstm_adam"], shrink=False)
    assert adam.optimizer.name == "adam" and adam.trainer.max_steps == 10000


@pytest.mark.parametrize("preset", ["tf_example_lstm_adam", "tf_example_bilstm", "fashion_lstm"])
def test_every_preset_trains(make_cfg, preset):
    cfg = make_cfg([f"experiment={preset}", "debug=fast", "data.source=bundled", "data.dataset=mnist",
                    "trainer.max_steps=2", "trainer.max_epochs=1"], shrink=False)
    assert train(cfg)["global_step"] == 2


def test_seed_preset_reports_first_128_accuracy_and_prints_step_lines(make_cfg, capsys):
    cfg = make_cfg(["experiment=tf_example_lstm", "debug=fast", "data.source=bundled", "trainer.max_steps=4",
                    "callbacks.step_printer.every_n_steps=2", "trainer.limit_test_batches=1.0"], shrink=False)
    record = train(cfg)
    assert record["global_step"] == 4
    assert 0.0 <= record["metrics"]["test/acc_first128"] <= 1.0
    out = capsys.readouterr().out
    assert "Step 2, Minibatch Loss=" in out and "Training Accuracy=" in out


def test_eval_of_the_best_checkpoint_reproduces_the_recorded_test_metrics(make_cfg):
    from rnnexp.evaluate import evaluate

    record = train(make_cfg(["trainer.limit_test_batches=1.0"]))
    metrics = evaluate(record["best"]["checkpoint"], [])
    assert metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(record["metrics"]["test/loss"], abs=1e-5)
