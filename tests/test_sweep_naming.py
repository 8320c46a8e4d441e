"""Sweep job folders are named by the keys the sweep varies only, deterministically, one folder per
job; the grid sweeper expands the command line into the same jobs, in the same order, as Hydra's
basic sweeper, and hands each job its folder and the sweep's varying keys."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from hydra_plugins.rnnexp_grid_sweeper.grid_sweeper import GridSweeper, check_distinct_folders, expand_grid
from rnnexp.sweep_naming import (
    MAX_NAME_LENGTH,
    VARYING_KEYS_ENV,
    job_dir_name,
    job_hydra_overrides,
    varying_keys_of_job,
)

PARSER = OverridesParser.create()


def grid(*command_line: str):
    return expand_grid(PARSER.parse_overrides(list(command_line)))


def test_name_holds_only_the_varying_keys_in_sweep_order():
    job = ["cell=gru", "data.dataset=fashion_mnist", "model.bidirectional=True", "trainer.max_epochs=1"]
    assert job_dir_name(job, ["cell", "model.bidirectional"]) == "cell=gru,model.bidirectional=true"
    assert job_dir_name(job, ["model.bidirectional", "cell"]) == "model.bidirectional=true,cell=gru"
    # a config group picked with + keeps its plain key
    assert job_dir_name(["+experiment=fashion_lstm", "seed=2"], ["experiment"]) == "experiment=fashion_lstm"


def test_a_multirun_that_sweeps_nothing_still_gets_a_name():
    assert job_dir_name(["cell=gru", "trainer.max_epochs=1"], []) == "cell=gru,trainer.max_epochs=1"
    assert job_dir_name(["cell=gru", "paths.output_root=/tmp/x"], [], ["paths.output_root"]) == "cell=gru"
    assert job_dir_name(["paths.output_root=/tmp/x"], [], ["paths.output_root"]) == "job"
    assert job_dir_name([], []) == "job"
    # the excluded keys matter only when nothing varies
    assert job_dir_name(["seed=1", "paths.output_root=/x"], ["seed"], ["seed"]) == "seed=1"


def test_a_varying_key_missing_from_the_job_is_an_error():
    with pytest.raises(ValueError, match=r"\['model.bidirectional'\]"):
        job_dir_name(["cell=gru"], ["cell", "model.bidirectional"])


@pytest.mark.parametrize("value", ["/data/a/b", "a b", "'x,y'", "[1,2]", "${paths.root_dir}", "a:b", "é"])
def test_values_that_are_not_plain_names_make_no_subfolder_and_stay_distinct(value):
    name = job_dir_name([f"data.data_dir={value}"], ["data.data_dir"])
    assert "/" not in name and " " not in name and "$" not in name and "'" not in name and ":" not in name
    assert name.isascii() and name.startswith("data.data_dir=")
    # the characters replaced by '_' are told apart by the hash of the exact value
    plain = job_dir_name([f"data.data_dir={value.replace('/', '_')}x"], ["data.data_dir"])
    assert name != plain and name != job_dir_name([f"data.data_dir={value}2"], ["data.data_dir"])
    assert name == job_dir_name([f"data.data_dir={value}"], ["data.data_dir"])  # the rerun finds it again


def test_long_names_are_cut_with_a_stable_hash_and_never_collide():
    keys = [f"model.layer_{i}.size" for i in range(12)]
    job = [f"{key}={i}" for i, key in enumerate(keys)]
    other = job[:-1] + ["model.layer_11.size=99"]  # differs only in the cut-off part
    name = job_dir_name(job, keys)
    assert len(name) == MAX_NAME_LENGTH and name.startswith("model.layer_0.size=0,model.layer_1.size=1,")
    assert name == job_dir_name(list(job), list(keys))
    assert job_dir_name(other, keys) != name
    # exactly at the limit: no hash
    at_limit = "x" * (MAX_NAME_LENGTH - len("k="))
    assert job_dir_name([f"k={at_limit}"], ["k"]) == f"k={at_limit}"
    assert len(job_dir_name([f"k={at_limit}y"], ["k"])) == MAX_NAME_LENGTH


def test_the_job_overrides_pass_hydras_grammar_with_the_name_and_keys_intact():
    job = ["cell=gru", "model.bidirectional=True", "data.data_dir=/tmp/x y"]
    keys = ["cell", "model.bidirectional", "data.data_dir"]
    subdir, env = PARSER.parse_overrides(job_hydra_overrides(job, keys))
    assert (subdir.key_or_group, subdir.value()) == ("hydra.sweep.subdir", job_dir_name(job, keys))
    assert subdir.is_hydra_override() and not subdir.is_sweep_override()
    assert env.key_or_group == f"hydra.job.env_set.{VARYING_KEYS_ENV}"
    assert varying_keys_of_job({VARYING_KEYS_ENV: env.value()}) == keys
    assert varying_keys_of_job({}) == [] and varying_keys_of_job({VARYING_KEYS_ENV: ""}) == []
    # without varying keys no variable; with the user's own subdir, no folder
    assert job_hydra_overrides(["cell=gru"], [], name_folder=False) == []
    with pytest.raises(ValueError, match="cannot name sweep jobs by the key"):
        job_hydra_overrides(["a b=1"], ["a b"])


def test_grid_crosses_the_lists_in_the_basic_sweepers_order():
    jobs, varying = grid("cell=rnn,gru", "debug=fast", "model.bidirectional=false,true", "seed=range(1,3)")
    assert varying == ["cell", "model.bidirectional", "seed"]
    assert [[o for o in job if not o.startswith("debug")] for job in jobs] == [
        ["cell=rnn", "model.bidirectional=False", "seed=1"], ["cell=rnn", "model.bidirectional=False", "seed=2"],
        ["cell=rnn", "model.bidirectional=True", "seed=1"], ["cell=rnn", "model.bidirectional=True", "seed=2"],
        ["cell=gru", "model.bidirectional=False", "seed=1"], ["cell=gru", "model.bidirectional=False", "seed=2"],
        ["cell=gru", "model.bidirectional=True", "seed=1"], ["cell=gru", "model.bidirectional=True", "seed=2"]]
    assert all("debug=fast" in job for job in jobs)
    names = [job_dir_name(job, varying) for job in jobs]
    assert names[0] == "cell=rnn,model.bidirectional=false,seed=1" and len(set(names)) == len(jobs)
    # a key given twice keeps its first place and its last value; a choice() of one value still varies
    jobs, varying = grid("a=1,2", "b=x", "a=3", "c=choice(z)")
    assert jobs == [["a=3", "b=x", "c=z"]] and varying == ["c"]
    assert grid() == ([[]], [])


def test_grid_refuses_an_interval_and_a_repeated_job():
    with pytest.raises(HydraException, match=r"optimizer.lr=interval\(0.1,1\).*hparams_search=optuna"):
        grid("optimizer.lr=interval(0.1,1)")
    jobs, varying = grid("cell=gru,gru")
    with pytest.raises(HydraException, match="would share the folder 'cell=gru'"):
        check_distinct_folders(jobs, [job_dir_name(job, varying) for job in jobs])


def sweeper(max_batch_size=None, params=None, hydra_overrides=()):
    sweeper = GridSweeper(max_batch_size=max_batch_size, params=params)
    sweeper.hydra_context = SimpleNamespace(config_loader=None)  # only glob() sweeps would need one
    sweeper.config = OmegaConf.create({"hydra": {"overrides": {"hydra": list(hydra_overrides)}}})
    return sweeper


def test_batches_and_params_and_the_users_own_subdir():
    batches = sweeper(max_batch_size=2, params={"seed": "1,2"}).job_batches(["cell=rnn,gru,lstm"])
    assert [len(b) for b in batches] == [2, 2, 2]
    first = batches[0][0]
    # hydra.sweeper.params come first, as in the basic sweeper
    assert first == ["seed=1", "cell=rnn", "hydra.sweep.subdir='seed=1,cell=rnn'",
                     f"hydra.job.env_set.{VARYING_KEYS_ENV}='seed,cell'"]
    assert [len(b) for b in sweeper().job_batches(["cell=rnn,gru,lstm"])] == [3]
    # a multirun that sweeps nothing: one job, named by its overrides less Hydra's exclude_keys
    one = sweeper().job_batches(["cell=gru", "paths.output_root=/tmp/x"])
    assert len(one) == 1 and len(one[0]) == 1 and one[0][0][-1].startswith("hydra.sweep.subdir='cell=gru,paths.")
    excluding = sweeper()
    excluding.config = OmegaConf.create({"hydra": {"overrides": {"hydra": []}, "job": {"config": {
        "override_dirname": {"exclude_keys": ["paths.output_root"]}}}}})
    assert excluding.job_batches(["cell=gru", "paths.output_root=/tmp/x"])[0][0][-1] == "hydra.sweep.subdir='cell=gru'"
    kept = sweeper(hydra_overrides=["hydra.sweep.subdir=${hydra.job.num}"]).job_batches(["cell=rnn,gru"])
    assert not any(o.startswith("hydra.sweep.subdir") for job in kept[0] for o in job)
    with pytest.raises(HydraException, match="max_batch_size=0"):
        GridSweeper(max_batch_size=0)


def test_resuming_a_sweep_job_hands_it_back_the_keys_its_sweep_varied(tmp_path):
    import json

    from rnnexp.train import resume_arguments

    job = tmp_path / "cell=gru,model.bidirectional=true"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- cell=gru\n- model.bidirectional=true\n- debug=fast\n")
    (job / "metrics.json").write_text(json.dumps({"status": "interrupted",
                                                  "sweep_keys": ["cell", "model.bidirectional"]}))
    arguments = resume_arguments([f"resume={job}"])
    assert arguments[:3] == ["cell=gru", "model.bidirectional=true", "debug=fast"]
    assert "hydra.job.env_set.RNNEXP_SWEEP_KEYS='cell,model.bidirectional'" in arguments
    assert arguments[-1] == f"hydra.run.dir={job.resolve()}"
    assert not any(a.startswith("hydra.sweep.subdir") for a in arguments)  # a run: its dir is given
    # a single run (no sweep keys recorded) resumes with its overrides alone
    (job / "metrics.json").write_text(json.dumps({"status": "interrupted", "sweep_keys": []}))
    assert resume_arguments([f"resume={job}"]) == ["cell=gru", "model.bidirectional=true", "debug=fast",
                                                   f"hydra.run.dir={job.resolve()}"]
