"""Every user-facing config key refuses a value of the wrong type with one line that names the key,
the value and what is allowed (rnnexp.config_schema, checked by rnnexp.build.validate).

The CLI matrix goes through the real `rnnexp-train`; the in-process walk covers every other key:
each leaf of the default config and of every option of every group."""

from __future__ import annotations

import os
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from rnnexp.build import validate
from rnnexp.config_schema import CONF_DIR, Field, config_files, load_yaml, schema, skipped
from rnnexp.errors import ConfigError


def _cli(venv_bin, args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNEXP_DEBUG", None)
    return subprocess.run([str(venv_bin / "rnnexp-train"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


CLI_CASES = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc'", "an integer > 0, or -1"),
    (["seed=abc"], "seed='abc'", "an integer"),
    (["threads=x"], "threads='x'", "an integer"),
    (["optimizer.lr=fast"], "optimizer.lr='fast'", "a number > 0"),
    (["model.hidden_size=1.5"], "model.hidden_size=1.5", "an integer > 0"),
    (["model.bidirectional=maybe"], "model.bidirectional='maybe'", "true, false"),
    (["model.num_layers=two"], "model.num_layers='two'", "an integer > 0"),
    (["data.batch_size=abc"], "data.batch_size='abc'", "an integer > 0"),
    (["data=adding", "bptt=truncated", "bptt.k1=abc"], "bptt.k1='abc'", "an integer"),
    (["trainer.gradient_clip_val=abc"], "trainer.gradient_clip_val='abc'", "a number >= 0"),
    (["trainer.limit_train_batches=abc"], "trainer.limit_train_batches='abc'", "a number"),
    (["callbacks.periodic_checkpoint.every_n_seconds=abc"],
     "callbacks.periodic_checkpoint.every_n_seconds='abc'", "a number >= 0"),
    (["model.dropout=abc"], "model.dropout='abc'", "a number in [0, 1)"),
    (["flush_denormal=1"], "flush_denormal=1", "true, false"),
]


@pytest.mark.parametrize("overrides,given,allowed", CLI_CASES, ids=[c[0][-1] for c in CLI_CASES])
def test_wrong_type_on_the_command_line_is_one_line_naming_the_key(venv_bin, tmp_path, overrides, given, allowed):
    result = _cli(venv_bin, [*overrides, f"paths.output_root={tmp_path}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"rnnexp-train: error: {given} is not valid; allowed: {allowed}"), lines[0]
    assert not list(tmp_path.glob("runs/*/*"))  # a refused command line leaves no run directory


# --- in process: every key of every option ----------------------------------------------------

def _options() -> list[str]:
    """"" (the defaults) and `group=option` for every option of every group with user values."""
    options = [""]
    for group, path in config_files():
        if group:
            options.append(f"{group}={path.relative_to(CONF_DIR / group).with_suffix('').as_posix()}")
    return options


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _leaf_values(node, prefix=""):
    """key -> unresolved value for every leaf of a plain container, the keys validate checks."""
    for name, value in node.items():
        key = f"{prefix}{name}"
        if skipped(key):
            continue
        if isinstance(value, dict) and value:
            yield from _leaf_values(value, key + ".")
        else:
            yield key, value


def _set(cfg, key, value):
    OmegaConf.update(cfg, key, value, merge=False)


@pytest.mark.parametrize("option", _options())
def test_every_key_of_every_option_refuses_a_string_where_it_takes_none(option):
    cfg = _compose([option] if option else [])
    validate(cfg)  # conf/'s own values pass
    fields = schema().fields
    raw = dict(_leaf_values(OmegaConf.to_container(cfg, resolve=False)))
    assert set(raw) <= set(fields), f"keys without a type: {sorted(set(raw) - set(fields))}"
    refused = [key for key in raw if not fields[key].accepts("abc")]
    if not option:
        assert len(refused) >= 50, refused  # the default config: numbers, booleans and choices
    for key in refused:
        _set(cfg, key, "abc")
        with pytest.raises(ConfigError) as caught:
            validate(cfg)
        assert caught.value.key == key and caught.value.value == "abc"
        assert str(caught.value).startswith(f"{key}='abc' is not valid; allowed: ")
        _set(cfg, key, raw[key])  # back to the value (or ${...}) conf/ gave it
    validate(cfg)


@pytest.mark.parametrize("key,value,message", [
    ("model.hidden_size", 1.5, "model.hidden_size=1.5 is not valid; allowed: an integer > 0"),
    ("model.compile", 1, "model.compile=1 is not valid; allowed: true, false"),
    ("trainer.max_steps", True, "trainer.max_steps=True is not valid; allowed: an integer > 0, or -1"),
    ("seed", None, "seed=None is not valid; allowed: an integer"),
    ("trainer.devices", "abc", "trainer.devices='abc' is not valid; allowed: an integer, auto, or a list"),
    ("trainer.precision", 17, "trainer.precision=17 is not valid; allowed: 32-true, 64-true"),
    ("trainer.deterministic", 1, "trainer.deterministic=1 is not valid; allowed: true, false, warn"),
    ("data.system_dirs", "abc", "data.system_dirs='abc' is not valid; allowed: a mapping (of fashion_mnist, mnist)"),
    ("data.system_dirs.mnist", "/x", "data.system_dirs.mnist='/x' is not valid; allowed: a list"),
    ("data.shuffle_seed", "${name}", "data.shuffle_seed='lstm_mnist_row' is not valid; allowed: an integer"),
    ("optimizer.lr", float("nan"), "optimizer.lr=nan is not valid; allowed: a number > 0"),
])
def test_wrong_kind_of_value_names_key_value_and_what_is_allowed(key, value, message):
    cfg = _compose([])
    _set(cfg, key, value)
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize("overrides", [
    ["optimizer.lr=1"],                               # an integer where a number goes
    ["trainer.limit_train_batches=2", "trainer.limit_val_batches=0.5"],
    ["trainer.gradient_clip_val=null"],
    ["trainer.devices=auto"], ["trainer.devices=[0]"], ["trainer=ddp", "trainer.devices=3"],
    ["trainer.precision=16"], ["trainer.precision=bf16-mixed"], ["trainer.deterministic=warn"],
    ["trainer.profiler=simple"],
    ["callbacks.periodic_checkpoint.every_n_seconds=0.5"], ["data.download_timeout_s=2.5"],
    ["name=2024"],                                    # a number where a free string goes
    ["data.system_dirs.mnist=[/x,/y]"],
    ["callbacks.gradient_flow=null"],
    ["data=adding", "bptt=truncated", "bptt.k2=${bptt.k1}"],
    ["+callbacks.new_one.every_n_steps=abc"],         # a key conf/ does not know is not checked
])
def test_values_of_the_right_kind_pass(overrides):
    validate(_compose(overrides))


def test_field_kinds():
    number = Field("k", frozenset({"float", "int"}))
    assert number.accepts(1) and number.accepts(1.5) and not number.accepts(True) and not number.accepts("1")
    integer = Field("k", frozenset({"int"}))
    assert integer.accepts(3) and not integer.accepts(3.0) and not integer.accepts(None)
    assert Field("k", frozenset({"int"}), optional=True).accepts(None)
    assert Field("k", frozenset({"int"}), optional=True).describe() == "an integer or null"
    assert Field("k", frozenset({"bool"})).describe() == "true, false"
    assert Field("k").accepts("anything")  # no type known (only ${oc.env:...} in conf/): not checked


def test_schema_types_come_from_conf():
    fields = schema().fields
    assert fields["trainer.max_epochs"].kinds == {"int"}
    assert {"int", "float"} <= fields["trainer.limit_train_batches"].kinds  # 1.0 in cpu.yaml, 4 in debug/fast
    assert fields["bptt.k2"].kinds == {"int"}  # ${.k1}: the type of bptt.k1
    assert fields["callbacks.checkpoint.mode"].choices == ("min", "max")  # ${data.metric_mode}
    assert fields["flush_denormal"].kinds == {"bool"}
    assert fields["trainer.profiler"].optional
    assert not any(key.startswith(("hydra.", "paths.")) or key.endswith("._target_") for key in fields)


def test_fast_yaml_reads_conf_as_omegaconf_does():
    for _, path in config_files():
        assert load_yaml(path) == OmegaConf.to_container(OmegaConf.load(path), resolve=False), path
