"""Truncated BPTT (rnnexp.bptt.truncated) held to an independent computation of the same
definition, step by step in float64, through the real config, build functions and Trainer."""

from __future__ import annotations

import copy
import json
import logging
import math
import subprocess

import pytest
import torch
from torch.func import functional_call

from rnnexp.build import build_bptt, build_datamodule, build_module, build_trainer
from rnnexp.errors import ConfigError

# A small float64 problem: tanh RNN with 4 units, plain SGD, one batch of 6 sequences per epoch
# (so the batch is the whole training set and its shuffled order does not change any mean).
SMALL = ["debug=fast", "threads=1", "cell=rnn", "model.hidden_size=4", "optimizer=sgd", "optimizer.lr=0.5",
         "trainer.precision=64-true", "trainer.limit_val_batches=0", "+trainer.enable_checkpointing=false",
         "+trainer.enable_model_summary=false", "data.limit_train_samples=0"]
SIZES = ["data.train_size=6", "data.batch_size=6", "data.val_size=2", "data.test_size=2"]
COPY = ["data=copy_memory", "data.seq_len=3", *SIZES]      # 23 steps, a label at each
ADDING = ["data=adding", "data.seq_len=9", *SIZES]         # 9 steps, one target at the end
WORKED_EXAMPLE = ["data=worked_example", "data.seq_len=5"]             # the tutorial's sequence, continued to 5 steps


def build(make_cfg, overrides):
    cfg = make_cfg(SMALL + overrides, shrink=False)
    torch.manual_seed(cfg.seed)  # same initial weights for every strategy
    datamodule = build_datamodule(cfg).prepare()
    module = build_module(cfg, datamodule.task)
    trainer = build_trainer(cfg, [], [], manual_optimization=not module.automatic_optimization)
    return cfg, datamodule, module, trainer


def fit(make_cfg, overrides):
    """Train; return (initial module copy in float64, trained module, trainer, training batch)."""
    _, datamodule, module, trainer = build(make_cfg, overrides)
    initial = copy.deepcopy(module).double()
    trainer.fit(module, datamodule=datamodule)
    x, y = datamodule.splits[0].inputs, datamodule.splits[0].targets
    return initial, module, trainer, (x.double(), y.double() if y.is_floating_point() else y)


def oracle_tbptt(module, batch, k1, k2, lr, epochs, clip=0.0, lr_factor=1.0):
    """TBPTT(k1, k2) with plain SGD, written out one time step at a time.

    The state a window starts from is the one recorded while the previous window ran (so computed
    with the parameters before that window's update). Returns the final parameters and each
    update's loss. `lr_factor` multiplies the learning rate after every update (StepLR, step 1)."""
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    x, y = batch
    steps = x.shape[1]
    per_step = module.task.per_step
    ends = list(range(k1, steps, k1)) + [steps]
    losses = []
    for _ in range(epochs):
        recorded = {0: None}
        for j, end in enumerate(ends):
            start = max(0, end - k2)
            live = {n: p.clone().requires_grad_() for n, p in params.items()}
            state, predictions, states = recorded[start], [], {}
            for t in range(start, end):
                prediction, state = functional_call(module, live, (x[:, t:t + 1], state))
                predictions.append(prediction)
                states[t + 1] = state
            if j + 1 < len(ends):
                at = max(0, ends[j + 1] - k2)
                recorded[at] = recorded[start] if at == start else tuple_detach(states[at])
            first_own = ends[j - 1] if j else 0
            if per_step:
                loss = module.loss(torch.cat(predictions[first_own - start:], dim=1), y[:, first_own:end])
            elif end == steps:
                loss = module.loss(predictions[-1], y)
            else:
                continue
            grads = dict(zip(live, torch.autograd.grad(loss, list(live.values()))))
            if clip:
                norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
                scale = min(1.0, clip / (float(norm) + 1e-6))
                grads = {n: g * scale for n, g in grads.items()}
            params = {n: params[n] - lr * grads[n] for n in params}
            lr *= lr_factor
            losses.append(float(loss.detach()))
    return params, losses


def oracle_lookback(module, batch, k, lr):
    """The tutorial's variant: one update, the loss at tau back-propagating through steps
    max(1, tau-k+1)..tau from s_{tau-k} held constant; all with the parameters at the start."""
    params = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    x, y = batch
    steps = x.shape[1]
    constant = [None]  # s_0 .. s_T without a graph
    with torch.no_grad():
        for t in range(steps):
            constant.append(functional_call(module, params, (x[:, t:t + 1], constant[-1]))[1])
    scored = range(1, steps + 1) if module.task.per_step else [steps]
    terms = []
    for tau in scored:
        start = max(0, tau - k)
        state = constant[start]
        for t in range(start, tau):
            prediction, state = functional_call(module, params, (x[:, t:t + 1], state))
        target = y[:, tau - 1:tau] if module.task.per_step else y
        terms.append(module.loss(prediction, target))
    loss = torch.stack(terms).mean()
    grads = torch.autograd.grad(loss, list(params.values()))
    return {n: p.detach() - lr * g for (n, p), g in zip(params.items(), grads)}


def tuple_detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def assert_params_equal(module, expected, tol=1e-10):
    for name, value in module.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("task, k1, k2", [
    (COPY, 4, 9),      # k1 < k2: each window re-runs 9 steps from a state recorded 5 steps back
    (ADDING, 2, 5),    # final target only: one update per sequence reaching back 5 steps
])
def test_truncated_trajectory_matches_step_by_step_oracle(make_cfg, task, k1, k2):
    initial, module, _, batch = fit(make_cfg, task + ["bptt=truncated", f"bptt.k1={k1}", f"bptt.k2={k2}",
                                                      "trainer.max_epochs=2"])
    expected, losses = oracle_tbptt(initial, batch, k1, k2, lr=0.5, epochs=2)
    assert_params_equal(module, expected)
    # train/loss is the mean of the batch's update losses
    per_batch = len(losses) // 2
    assert float(module.last_batch[0]) == pytest.approx(sum(losses[per_batch:]) / per_batch, rel=1e-10)


def test_truncated_clips_and_steps_a_step_scheduler(make_cfg):
    # Lightning does neither under manual optimisation: the strategy must.
    overrides = COPY + ["bptt=truncated", "bptt.k1=6", "bptt.k2=8", "trainer.gradient_clip_val=0.05",
                        "scheduler=step", "scheduler.interval=step", "scheduler.step_size=1",
                        "scheduler.gamma=0.5"]
    initial, module, trainer, batch = fit(make_cfg, overrides)
    expected, _ = oracle_tbptt(initial, batch, 6, 8, lr=0.5, epochs=1, clip=0.05, lr_factor=0.5)
    assert_params_equal(module, expected)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 ** 4)
    # and without clipping the result differs, so the clip really acted
    unclipped, _ = oracle_tbptt(initial, batch, 6, 8, lr=0.5, epochs=1, lr_factor=0.5)
    assert not torch.allclose(unclipped["head.weight"], expected["head.weight"])


@pytest.mark.parametrize("task, steps", [(COPY, 23), (ADDING, 9)], ids=["per_step", "final_target"])
def test_k_equal_to_sequence_length_is_full_bptt(make_cfg, task, steps):
    extra = ["trainer.max_epochs=2", "trainer.gradient_clip_val=0.1"]
    _, full, full_trainer, _ = fit(make_cfg, task + extra + ["bptt=full"])
    _, truncated, truncated_trainer, _ = fit(make_cfg, task + extra + ["bptt=truncated", f"bptt.k1={steps}"])
    assert truncated_trainer.global_step == full_trainer.global_step == 2
    assert_params_equal(truncated, dict(full.named_parameters()), tol=1e-12)


@pytest.mark.parametrize("task, k1, updates_per_batch", [
    (COPY, 5, 5), (COPY, 23, 1), (COPY, 1, 23), (ADDING, 2, 1)])
def test_global_step_counts_optimizer_steps(make_cfg, task, k1, updates_per_batch):
    _, _, trainer, _ = fit(make_cfg, task + ["bptt=truncated", f"bptt.k1={k1}", "trainer.max_epochs=3"])
    assert trainer.global_step == 3 * updates_per_batch


def test_epoch_and_plateau_schedulers_step_under_truncation(make_cfg):
    base = COPY + ["bptt=truncated", "bptt.k1=8", "trainer.max_epochs=3"]
    _, _, trainer, _ = fit(make_cfg, base + ["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5 * 0.5 ** 3)
    _, _, trainer, _ = fit(make_cfg, base + ["scheduler=plateau", "trainer.limit_val_batches=1"])
    plateau = trainer.lr_scheduler_configs[0].scheduler
    assert plateau.last_epoch == 3  # stepped once per epoch, each time with val/loss


def test_lookback_matches_its_definition(make_cfg):
    # an LSTM: (h, c) start states batched across windows (the reference below covers Elman cells)
    initial, module, trainer, batch = fit(make_cfg, COPY + ["cell=lstm", "bptt=lookback", "bptt.k1=4"])
    assert trainer.global_step == 1
    assert_params_equal(module, oracle_lookback(initial, batch, 4, lr=0.5))


def test_lookback_equals_truncated_on_a_final_target(make_cfg):
    _, seed, _, _ = fit(make_cfg, ADDING + ["bptt=lookback", "bptt.k1=4"])
    _, truncated, _, _ = fit(make_cfg, ADDING + ["bptt=truncated", "bptt.k1=4"])
    assert_params_equal(truncated, dict(seed.named_parameters()), tol=1e-12)


def test_lstm_states_carry_across_windows(make_cfg):
    # (h, c) tuples through two-piece windows: the same oracle, another cell family
    initial, module, _, batch = fit(make_cfg, COPY + ["cell=lstm", "bptt=truncated", "bptt.k1=5", "bptt.k2=7"])
    expected, _ = oracle_tbptt(initial, batch, 5, 7, lr=0.5, epochs=1)
    assert_params_equal(module, expected)


# -- against the NumPy reference (rnnexp.bptt.reference, written out by hand) --------------------------
def fit_against_reference(make_cfg, overrides):
    """A tanh RNN trained by Lightning, and the reference network holding its initial weights.

    torch has two recurrent biases that each receive dL/db, the reference one b = b_ih + b_hh; with
    b_hh zeroed and frozen one SGD step moves both sums alike (the reference's own advice)."""
    from rnnexp.bptt.reference import ElmanNetwork

    _, datamodule, module, trainer = build(make_cfg, overrides)
    rnn = module.encoder.core.rnn
    for name, p in rnn.named_parameters():
        if name.startswith("bias_hh"):
            p.detach().zero_()
            p.requires_grad_(False)
    task = datamodule.task
    net = ElmanNetwork(task.input_size, rnn.hidden_size, task.output_size, num_layers=rnn.num_layers,
                       activation="tanh", loss="ce" if task.is_classification else "mse")
    net.load_torch_weights(dict(rnn.named_parameters()), dict(module.head.named_parameters()))
    trainer.fit(module, datamodule=datamodule)
    x, y = (t.double().numpy() if t.is_floating_point() else t.numpy() for t in datamodule.splits[0][:])
    if not task.is_classification:
        y = y[..., None]  # the reference's mse targets carry the output axis
    return module, net, x, y


def assert_matches_reference(module, net, tol=1e-10):
    recurrent, head = net.torch_weights()
    expected = {**{f"encoder.core.rnn.{n}": v for n, v in recurrent.items()},
                **{f"head.{n}": v for n, v in head.items()}}
    for name, value in module.named_parameters():
        torch.testing.assert_close(value.detach(), torch.from_numpy(expected[name]), rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("task, k1, k2, layers", [
    (COPY, 5, 5, 1), (COPY, 4, 9, 1), (COPY, 6, 8, 2), (ADDING, 3, 3, 1), (ADDING, 2, 5, 1),
    (ADDING, 9, 9, 1),  # k1 = k2 = T: full BPTT
], ids=["each_k1=k2", "each_k1<k2", "each_stacked", "final_k1=k2", "final_k1<k2", "final_k=T"])
def test_truncated_gradient_matches_reference(make_cfg, task, k1, k2, layers):
    from rnnexp.bptt.reference import tbptt_train_sequence

    module, net, x, y = fit_against_reference(make_cfg, task + [
        "bptt=truncated", f"bptt.k1={k1}", f"bptt.k2={k2}", f"model.num_layers={layers}", "trainer.max_epochs=2"])
    for _ in range(2):  # one batch per epoch: the whole training set
        tbptt_train_sequence(net, x, y, k1, k2, lr=0.5)
    assert_matches_reference(module, net)


@pytest.mark.parametrize("task, k", [(COPY, 4), (ADDING, 4), (WORKED_EXAMPLE, 2)], ids=["each", "final", "worked_example"])
def test_lookback_gradient_matches_reference(make_cfg, task, k):
    from rnnexp.bptt.reference import lookback_gradients

    module, net, x, y = fit_against_reference(make_cfg, task + ["bptt=lookback", f"bptt.k1={k}"])
    lookback_gradients(net, x, y, k)
    net.update(0.5)
    assert_matches_reference(module, net)


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    (["bptt=truncated", "model.bidirectional=true"], "bptt.name='truncated'"),
    (["bptt=lookback", "model.bidirectional=true"], "bptt.name='lookback'"),
    (["bptt=truncated", "bptt.k1=10", "bptt.k2=5"], "bptt.k2=5"),
    (["bptt=truncated", "bptt.k1=0"], "bptt.k1=0"),
    (["bptt=truncated", "bptt.k1=-3"], "bptt.k1=-3"),
    (["bptt=truncated", "bptt.k1=4", "bptt.k2=0"], "bptt.k2=0"),
    (["bptt=truncated", "bptt.k1=2.5"], "bptt.k1=2.5"),
    (["bptt=lookback", "bptt.k1=4", "bptt.k2=6"], "bptt.k2=6"),
    (["bptt=truncated", "bptt.name=chunked"], "bptt.name='chunked'"),
])
def test_refusals_name_key_and_value(make_cfg, overrides, key):
    cfg = make_cfg(SMALL + ADDING + overrides, shrink=False)
    with pytest.raises(ConfigError) as error:
        build_bptt(cfg, bool(cfg.model.bidirectional), seq_len=9)
    assert str(error.value).startswith(key) and "allowed" in str(error.value)


def test_mean_output_readout_is_refused_for_a_final_target(make_cfg):
    _, datamodule, module, trainer = build(make_cfg, ADDING + ["bptt=truncated", "bptt.k1=3",
                                                               "model.readout=mean_output"])
    with pytest.raises(ConfigError, match="model.readout='mean_output'"):
        trainer.fit(module, datamodule=datamodule)


def test_k_longer_than_sequence_falls_back_to_full_bptt_with_a_notice(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="rnnexp.bptt.truncated"):
        _, _, trainer, _ = fit(make_cfg, COPY + ["bptt=truncated", "bptt.k1=100"])
    assert "bptt.k1=100 >= data.seq_len=23" in caplog.text and "full BPTT" in caplog.text
    assert trainer.global_step == 1


# -- through the command line ---------------------------------------------------------------------
def test_bptt_axis_sweeps_from_the_command_line(venv_bin, tmp_path):
    command = [str(venv_bin / "rnnexp-train"), "-m", "bptt=full,truncated", "bptt.k1=10", "data=adding",
               "data.seq_len=20", "cell=gru", "model.hidden_size=8", "debug=fast", "threads=1",
               f"paths.output_root={tmp_path}"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    records = {json.loads(p.read_text())["hparams"]["bptt.name"]: json.loads(p.read_text())
               for p in tmp_path.glob("multirun/*/*/*/metrics.json")}
    assert set(records) == {"full", "truncated"}
    for record in records.values():
        assert record["status"] == "completed"
        assert record["global_step"] == 4  # final target: one update per batch either way
        assert math.isfinite(record["metrics"]["test/mse"])
    assert records["truncated"]["hparams"]["bptt.k1"] == records["truncated"]["hparams"]["bptt.k2"] == 10
