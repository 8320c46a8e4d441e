"""rnnexp's Optuna sweeper (hparams_search=optuna): the search space, pruning, resuming a study,
stale trials of a killed sweeper, and one study shared by two sweepers on a real PostgreSQL server.

End-to-end cases go through the real command line, shrunk (debug=fast on the bundled MNIST subset,
one torch thread, a GRU-32 or GRU-64). The PostgreSQL case uses $RNNEXP_TEST_POSTGRES_URL when set
(CI: `eval "$(scripts/postgres_server.sh up)"`), else starts scripts/postgres_server.sh itself, and
is skipped with the reason where neither works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import compose_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.rnnexp_optuna_sweeper.search_space import build_space, override_value
from hydra_plugins.rnnexp_optuna_sweeper.sweeper import RnnexpOptunaSweeper, job_name
from rnnexp.errors import ConfigError, SearchSpaceError

BIN = Path(sys.executable).parent
SHRINK = ["debug=fast", "data.source=bundled", "threads=1"]
optuna.logging.set_verbosity(optuna.logging.WARNING)
# heartbeats, stale-trial retries and ask-and-tell with heartbeats: what Optuna calls experimental
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")]


def train(args: list[str], cwd: Path, env: dict | None = None, expect: int = 0, timeout: float = 300):
    done = subprocess.run([str(BIN / "rnnexp-train"), *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=timeout)
    assert done.returncode == expect, f"exit {done.returncode}, expected {expect}:\n{done.stderr[-4000:]}"
    return done


def search(tmp_path: Path, *extra: str, storage: str | None = None) -> list[str]:
    """A search of GRU-32s over the learning rate only, into tmp_path."""
    storage = storage or f"sqlite:///{tmp_path}/optuna.db"
    return ["-m", "hparams_search=optuna", *SHRINK, f"paths.output_root={tmp_path}", f"hydra.sweeper.storage={storage}",
            "cell=gru", "model.hidden_size=32", "model.num_layers=1", *extra]


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))]


# -- the search space, without training ------------------------------------------------------------
def test_search_space_reads_hydras_sweep_syntax_as_optuna_distributions():
    params = {"optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
              "model": {"num_layers": "range(1, 4)"},  # what hydra.sweeper.params.model.num_layers=... builds
              "bptt": "truncated", "bptt.k1": "tag(log, int(interval(5, 28)))", "model.dropout": "range(0.0, 0.3, 0.1)",
              "model.hidden_size": "choice(32, 64)", "cell": "choice(rnn, lstm)"}
    space = build_space(params, ["cell=gru,lstm", "threads=1", "model.hidden_size=64"])
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "model.num_layers": IntDistribution(1, 3),  # range's stop is excluded, Optuna's high included
        "bptt.k1": IntDistribution(5, 28, log=True),
        "model.dropout": FloatDistribution(0.0, 0.2, step=0.1),
        "cell": CategoricalDistribution(["gru", "lstm"]),  # the command line's range replaces the config's
    }
    # plain command-line overrides reach every trial and take their key out of the space
    assert space.fixed == ["threads=1", "model.hidden_size=64", "bptt=truncated"]


@pytest.mark.parametrize("entry, says", [
    ("interval(1e-2, 1e-4)", "needs low < high"),
    ("tag(log, interval(0, 1))", "a log interval needs low > 0"),
    ("range(5, 1)", "is empty"),
    ("choice(a, b", "does not parse"),
])
def test_a_search_range_optuna_cannot_sample_is_refused_naming_its_key(entry, says):
    with pytest.raises(SearchSpaceError, match=rf"hydra\.sweeper\.params\.optimizer\.lr.*{says}"):
        build_space({"optimizer.lr": entry}, [])


def test_a_bad_range_on_the_command_line_is_named_as_given():
    with pytest.raises(SearchSpaceError, match=r"^optimizer\.lr: interval\(1.0, 0.1\) needs low < high"):
        build_space({"optimizer.lr": "interval(1e-4, 1e-2)"}, ["optimizer.lr=interval(1, 0.1)"])


def test_a_searched_key_cannot_be_added_per_trial():
    with pytest.raises(SearchSpaceError, match=r"\+model.extra=1,2: a searched key cannot be added"):
        build_space({}, ["+model.extra=1,2"])


@pytest.mark.parametrize("value", [1e-05, 0.1, 2.5e-300, 3, -1, True, False, "rnn", "1e-3", "true", "null", "a b",
                                   "it's", "sqlite:////tmp/x y/optuna.db", "trial=003,cell=gru"])
def test_a_sampled_value_reaches_the_job_with_its_type_and_value(value):
    parsed = OverridesParser.create().parse_override(f"key={override_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_a_trial_job_is_named_by_its_number_and_searched_values():
    assert job_name(7, ["cell=gru", "optimizer.lr=0.00123"], ["cell", "optimizer.lr"]) == \
        "trial=007,cell=gru,optimizer.lr=0.00123"
    # two trials that drew the same values still get folders of their own
    assert job_name(8, ["cell=gru"], ["cell"]) != job_name(9, ["cell=gru"], ["cell"])


def test_hparams_search_composes_rnnexps_sweeper_with_the_tasks_direction(make_cfg):
    from rnnexp.build import build_callbacks
    from rnnexp.callbacks.trial_pruning import TrialPruning

    cfg = make_cfg(["hparams_search=optuna"])
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.rnnexp_optuna_sweeper.sweeper.RnnexpOptunaSweeper"
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.pruner == "median"
    # a single run of the search config reports to no trial: the callback is left out
    assert not any(isinstance(cb, TrialPruning) for cb in build_callbacks(cfg))
    assert make_cfg(["hparams_search=optuna", "data=adding"], shrink=False).hydra.sweeper.direction == "minimize"
    trial_cfg = make_cfg(["hparams_search=optuna", "trial.storage=sqlite:///x.db", "trial.study_name=s",
                          "trial.number=3", "hydra.sweeper.pruner=hyperband"])
    pruning = [cb for cb in build_callbacks(trial_cfg) if isinstance(cb, TrialPruning)]
    assert len(pruning) == 1 and pruning[0].trial_number == 3 and pruning[0].pruner_name == "hyperband"
    assert pruning[0].monitor == "val/acc" and pruning[0].pruning["reduction_factor"] == 3


@pytest.mark.parametrize("name, kind", [("median", optuna.pruners.MedianPruner),
                                        ("hyperband", optuna.pruners.HyperbandPruner), ("none", optuna.pruners.NopPruner)])
def test_each_pruner_name_builds_its_optuna_pruner_from_the_configs_settings(name, kind):
    from rnnexp.optuna_study import pruner_of

    settings = compose_config(["hparams_search=optuna"]).hydra.sweeper.pruning
    assert type(pruner_of(name, settings)) is kind


def test_a_bad_sweeper_setting_is_one_line_naming_the_key(tmp_path):
    done = train(search(tmp_path, "hydra.sweeper.pruner=average"), cwd=tmp_path, expect=2)
    assert "hydra.sweeper.pruner='average' is not valid; allowed: median, hyperband, none" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_database_that_cannot_be_reached_is_one_line_naming_the_key_without_the_password():
    from rnnexp.optuna_study import open_storage

    with pytest.raises(ConfigError, match=r"^hydra.sweeper.storage='postgresql://me:\*\*\*@127.0.0.1:1/none' is "
                                          r"not valid \(the database could not be opened: .*refused"):
        open_storage("postgresql://me:secret@127.0.0.1:1/none")  # port 1: nothing listens


def sweeper(storage: str, **changes) -> RnnexpOptunaSweeper:
    """The sweeper object as Hydra builds it from conf/hparams_search/optuna.yaml, with `changes`."""
    node = compose_config(["hparams_search=optuna"]).hydra.sweeper
    settings = {k: node[k] for k in node if k != "_target_"}
    settings.update(storage=storage, study_name="s", **changes)
    made = RnnexpOptunaSweeper(**settings)
    made._check()
    return made


def test_a_study_keeps_its_direction(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(storage=url, study_name="s", direction="minimize")
    with pytest.raises(ConfigError, match=r"hydra.sweeper.direction='maximize'.*was created to minimize"):
        sweeper(url, direction="maximize")._open_study()


def test_running_trials_of_a_dead_sweeper_are_failed_or_queued_again(tmp_path):
    studies = {}
    for mode in ("fail", "retry"):
        url = f"sqlite:///{tmp_path}/{mode}.db"
        made = sweeper(url, stale_trials=mode, heartbeat_interval=1, grace_period=2)
        study, storage = made._open_study()
        dead = study.ask({"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)})
        dead.set_user_attr("run_dir", str(tmp_path / "trial=000"))
        dead_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), dead.number)
        storage.record_heartbeat(dead_id)  # ... and then its sweeper was killed
        alive = study.ask({"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)})  # no heartbeat: never stale
        studies[mode] = (made, study, dead, alive)
    time.sleep(3.2)  # > grace_period since the last heartbeat (SQLite keeps whole seconds)
    for mode, (made, study, dead, alive) in studies.items():
        made._handle_stale_trials(study)
        trials = study.get_trials()
        assert [t.state for t in trials[:2]] == [TrialState.FAIL, TrialState.RUNNING]
        if mode == "fail":
            assert len(trials) == 2
        else:  # queued again with the same parameters and run directory, for the next ask
            assert len(trials) == 3 and trials[2].state == TrialState.WAITING
            assert trials[2].params == dead.params and trials[2].user_attrs["run_dir"] == str(tmp_path / "trial=000")
            assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[2]) == dead.number


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pruning_stops_trials_in_a_bad_region_of_the_space(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="lr", direction="maximize")
    # a learning rate that trains, then two that leave the network where it started
    for lr in (1e-2, 1e-8, 1e-8):
        study.enqueue_trial({"optimizer.lr": lr})
    train(search(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.study_name=lr", "model.hidden_size=64",
                 "optimizer.lr=tag(log, interval(1e-9, 1e-1))", "hydra.sweeper.pruning.n_startup_trials=1",
                 "trainer.max_epochs=3", f"hydra.sweep.dir={tmp_path / 'search'}"), cwd=tmp_path)
    trials = optuna.load_study(storage=url, study_name="lr").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert [t.user_attrs.get("pruned_at_step") for t in trials] == [None, 4, 4]
    by_number = {r["trial"]["number"]: r for r in records(tmp_path / "search")}
    assert by_number[0]["status"] == "completed" and by_number[0]["global_step"] == 12  # 3 epochs of 4 batches
    for number in (1, 2):  # stopped after the first validation, as finished runs: record, checkpoints, test
        pruned = by_number[number]
        assert pruned["status"] == "pruned" and pruned["global_step"] == 4
        assert pruned["trial"] == {"number": number, "study": "lr", "state": "PRUNED", "pruned_at_step": 4}
        run_dir = Path(pruned["run_dir"])
        assert (run_dir / "checkpoints" / "last.ckpt").is_file() and "test/acc" in pruned["metrics"]
        assert pruned["hparams"]["optimizer.lr"] == pytest.approx(1e-8)
    # the intermediate values the pruner compared: the good trial ahead at step 4
    assert trials[0].intermediate_values[4] > trials[1].intermediate_values[4]
    results = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    assert results["best_trial"] == 0 and results["trials"] == {"COMPLETE": 1, "PRUNED": 2}


@pytest.mark.slow
def test_the_same_command_again_continues_the_sqlite_study(tmp_path):
    command = search(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=none", "hydra.sweeper.sampler.seed=3",
                     "trainer.limit_train_batches=2")
    train(command, cwd=tmp_path)
    train(command, cwd=tmp_path)  # a new sweep folder (<date>/<time>), the same study
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="mnist_row")
    assert [(t.number, t.state) for t in study.trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    sweeps = sorted(p.parent for p in (tmp_path / "multirun").rglob("optimization_results.yaml"))
    assert [[r["trial"]["number"] for r in records(s)] for s in sweeps] == [[0], [1]]
    assert yaml.safe_load((sweeps[1] / "optimization_results.yaml").read_text())["trials"] == {"COMPLETE": 2}
    # seeded, yet the continued study proposes a new point, not the first one again
    first, second = (t.params["optimizer.lr"] for t in study.trials)
    assert first != second
    again = optuna.samplers.TPESampler(seed=3, n_startup_trials=5, constant_liar=True)  # the config's, seed 3
    fresh = optuna.create_study(sampler=again).ask({"optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True)})
    assert fresh.params["optimizer.lr"] == pytest.approx(first)


@pytest.mark.slow
def test_a_killed_sweepers_trial_is_retried_from_its_last_checkpoint(tmp_path):
    command = search(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.stale_trials=retry",
                     "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
                     "callbacks.periodic_checkpoint.every_n_train_steps=1")
    # the sweeper runs its trial in its own process (basic launcher): SIGKILL at step 3 kills both
    train([*command, f"hydra.sweep.dir={tmp_path / 'first'}"], cwd=tmp_path,
          env={"RNNEXP_FAULT": "train_batch_end@3"}, expect=-signal.SIGKILL)
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/optuna.db", study_name="mnist_row")
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    time.sleep(3)  # no heartbeat for longer than grace_period: the trial is stale
    train([*command, f"hydra.sweep.dir={tmp_path / 'second'}"], cwd=tmp_path)
    first, retry = study.get_trials()
    assert (first.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert retry.params == first.params and retry.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    # one run directory, the dead trial's, resumed from last.ckpt at step 3 and finished
    (record,) = records(tmp_path)
    assert record["run_dir"] == first.user_attrs["run_dir"] and Path(record["run_dir"]).parent == tmp_path / "first"
    assert record["status"] == "completed" and record["global_step"] == 4
    assert record["trial"] == {"number": 1, "study": "mnist_row", "state": "COMPLETE"}
    assert [r["previous_status"] for r in record["resumes"]] == ["running"]
    assert retry.value == pytest.approx(record["optimized_value"])


# -- one study, two workers, on PostgreSQL ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_two_sweepers_on_one_postgresql_study_run_every_trial_once(tmp_path, fresh_database):
    command = search(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none",
                     "hydra.sweeper.study_name=shared", "trainer.limit_train_batches=2", storage=fresh_database)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([str(BIN / "rnnexp-train"), *command, f"hydra.sweep.dir={tmp_path / f'worker{i}'}"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    errors = [worker.communicate(timeout=400)[1] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    study = optuna.load_study(storage=fresh_database, study_name="shared")
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # none lost, none left RUNNING
    runs = records(tmp_path)
    # each trial ran exactly once, in one run directory, and each worker ran its 2
    assert sorted(r["trial"]["number"] for r in runs) == list(range(4))
    assert all("resumes" not in r for r in runs)
    assert sorted(len(records(tmp_path / f"worker{i}")) for i in range(2)) == [2, 2]
    for run in runs:
        assert study.trials[run["trial"]["number"]].user_attrs["run_dir"] == run["run_dir"]
    best_value = max(r["optimized_value"] for r in runs)
    assert study.best_value == pytest.approx(best_value)
    # (a few batches of validation: two trials may tie)
    assert study.best_trial.user_attrs["run_dir"] in {r["run_dir"] for r in runs if r["optimized_value"] == best_value}
