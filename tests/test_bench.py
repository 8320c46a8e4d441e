"""`rnnexp-bench` end to end, shrunk to seconds: every section runs and reports finite numbers under the
row names and JSON keys the command has always written.

Not a timing assertion (the suite shares 2 cores with whatever else runs): the ratios the README
quotes are measured by the command at its default size, on a quiet machine."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from rnnexp.bench import cli
from rnnexp.bench.harness import StepTimer
from rnnexp.bench.sections import PlainLoop, scaling_points

TINY = ["--dataset", "mnist", "--source", "bundled", "--hidden-size", "8", "--batch-size", "32", "--threads", "1",
        "--steps", "3", "--repeats", "1", "--cells", "lstm", "--backend-steps", "1", "--backend-repeats", "1",
        "--no-compile", "--seq-len", "56", "--k", "14", "--bptt-steps", "1", "--denormal-repeats", "1",
        "--startup-repeats", "1", "--sweep-steps", "2", "--scaling-steps", "1", "--scaling-cells", "lstm",
        "--scaling-seq-lens", "28,112", "--scaling-hidden-sizes", "16", "--scaling-batch-sizes", "16"]

# The JSON a run writes (bench.json, --json): per section the keys of the section, its setup and its rows
# (docs/bench-2026-11-27.json, written before the package was rewritten, has these too).
KEYS = {
    "epoch": ({"cell", "hidden_size", "batch_size", "steps", "threads", "seed", "dataset", "source", "device",
               "precision", "overrides", "source_used", "repeats", "train_samples", "threads_used"},
              {"variant", "wall_s", "steps", "ms_per_step", "epoch_s", "all_wall_s"}),
    "backends": ({"device", "note"}, {"cell", "backend", "step_ms", "step_ms_min", "cpu_step_ms", "epoch_s", "ratio",
                                      "cpu_ratio", "warmup_s", "hidden_size", "seq_len", "batch_size", "threads"}),
    "bptt": ({"seq_len", "hidden_size", "batch_size", "k", "cell", "steps", "threads", "device"},
             {"strategy", "step_s", "epoch_s", "optimizer_steps_per_batch", "peak_growth_mb"}),
    "denormals": ({"seq_len", "hidden_size", "batch_size", "cell", "repeats", "threads", "device"},
                  {"setting", "flush_denormal", "step_s", "all_s"}),
    "startup": ({"repeats", "dataset", "source", "threads", "command"}, {"what", "median_s", "min_s", "all_s"}),
    "sweep": ({"cell", "hidden_size", "dataset", "source", "device", "steps", "repeats", "cores"},
              {"mode", "wall_s", "jobs_per_hour", "train_s_per_job", "threads_per_job", "processes", "all_wall_s"}),
    "scaling": ({"cells", "backends", "steps", "threads", "device", "precision", "base"},
                {"cell", "backend", "axis", "seq_len", "hidden_size", "batch_size", "step_ms", "epoch_s", "timed_steps",
                 "peak_growth_mb"}),
}
MACHINE = {"host", "cpu", "cores", "python", "torch", "torch_threads", "load_average_before", "load_average_after"}


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_bench_in_two_halves(tmp_path, capsys) -> dict:
    """The whole command, its sections split in two runs side by side: the sections that time
    `rnnexp-train` processes run in a second bench process while this one runs the rest (each start
    of a process pays for importing torch). Timings mean nothing here; rows and numbers are checked."""
    side = subprocess.Popen([sys.executable, "-m", "rnnexp.bench.cli", *TINY, "--only", "sweep,startup", "--json",
                             "--out-dir", str(tmp_path / "side")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        code = cli.main([*TINY, "--only", "epoch,backends,bptt,denormals,scaling", "--json", "--out-dir",
                         str(tmp_path)])
        out, err = side.communicate(timeout=600)
    finally:
        side.kill()
    here, there = json.loads(capsys.readouterr().out), json.loads(out)
    assert code == 0 and side.returncode == 0, (here["sections"], err[-3000:])
    assert json.loads((tmp_path / "bench.json").read_text())["checks"] == here["checks"]
    sections = {**here["sections"], **there["sections"]}
    checks = here["checks"] + [c for c in there["checks"] if not c["name"].startswith("GPU: ")]
    return {"machine": here["machine"], "sections": {name: sections[name] for name in cli.SECTIONS}, "checks": checks}


@pytest.mark.slow
def test_bench_command_reports_every_section_and_ratio_with_finite_numbers(tmp_path, capsys):
    report = run_bench_in_two_halves(tmp_path, capsys)
    errors = {name: s["error"] for name, s in report["sections"].items() if "error" in s}
    assert not errors, errors

    assert MACHINE <= set(report["machine"])
    for name, (setup_keys, row_keys) in KEYS.items():
        section = report["sections"][name]
        assert {"setup", "rows", "elapsed_s"} <= set(section) and setup_keys <= set(section["setup"]), name
        assert all(row_keys <= set(row) for row in section["rows"]), (name, section["rows"][0].keys())
    names = [check["name"] for check in report["checks"]]
    for expected in ("epoch: rnnexp, bar off / plain", "epoch: rnnexp, bar on / plain",
                     "backends: explicit / native, LSTM-8 (CPU)", "BPTT: truncated (k=14) / full peak memory growth",
                     "denormals: flushed / kept step time, LSTM-8, T=56",
                     "start-up: rnnexp-train --cfg job", "start-up: rnnexp-train --help",
                     "sweep: joblib / the same 2 jobs in sequence", "sweep: joblib / basic launcher", "GPU: "):
        assert any(name.startswith(expected) for name in names), (expected, names)
    for check in report["checks"]:
        assert {"name", "value", "target", "detail", "met"} <= set(check) and check["met"] in (True, False, None)
        if check["name"].startswith("GPU: "):
            assert check["value"] is None and "unmeasured" in check["detail"]  # no GPU in the suite
        else:
            assert finite(check["value"]) and check["value"] > 0, check

    sections = report["sections"]
    assert [r["variant"] for r in sections["epoch"]["rows"]] == ["plain", "plain, 2nd copy", "rnnexp, bar off",
                                                                  "rnnexp, bar on"]
    assert all(r["steps"] == 3 and finite(r["wall_s"]) and finite(r["epoch_s"]) for r in sections["epoch"]["rows"])
    # interleaved: every repeat's ratio is there, and the reported one is their median
    for row in sections["epoch"]["rows"][1:]:
        assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"] and len(row["all_ratios"]) == 1
    assert {r["backend"] for r in sections["backends"]["rows"]} == {"native", "explicit"}
    assert all(finite(r["step_ms"]) and finite(r["cpu_ratio"]) for r in sections["backends"]["rows"])
    assert [r["strategy"] for r in sections["bptt"]["rows"]] == ["full", "truncated"]
    # a final-target task: truncated BPTT runs 56 / 14 windows and updates once, from the last
    assert [r["optimizer_steps_per_batch"] for r in sections["bptt"]["rows"]] == [1, 1]
    assert all(finite(r["step_s"]) and finite(r["peak_growth_mb"]) for r in sections["bptt"]["rows"])
    assert [r["flush_denormal"] for r in sections["denormals"]["rows"]] == [False, True]
    assert all(finite(r["step_s"]) and len(r["all_s"]) == 1 for r in sections["denormals"]["rows"])
    startup = {r["what"]: r["median_s"] for r in sections["startup"]["rows"]}
    assert 0 < startup["before the Trainer"] < startup["first step"] <= startup["one-step run, whole process"]
    sweep = {r["mode"]: r for r in sections["sweep"]["rows"]}
    assert sweep["joblib"]["processes"] == 2 and sweep["sequential"]["processes"] == 1
    # joblib's workers get cores // n_jobs threads each; the sequential process torch's default
    assert sweep["joblib"]["threads_per_job"] == [max(1, report["machine"]["cores"] // 2)]
    assert sweep["sequential"]["threads_per_job"][0] >= sweep["joblib"]["threads_per_job"][0]
    assert sweep["sequential, 1 thread"]["threads_per_job"] == [1]  # the same jobs as joblib's, in turn

    scaling = sections["scaling"]
    points = scaling_points((28, 112), (16,), (16,), base={"hidden_size": 8, "batch_size": 32})
    assert [{k: r[k] for k in points[0]} for r in scaling["rows"]] == points * 2  # x native, explicit
    assert all(finite(r["step_ms"]) and finite(r["epoch_s"]) and finite(r["peak_growth_mb"]) for r in scaling["rows"])
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


def test_bench_rejects_an_unknown_section_naming_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--only", "epoch,speed"])
    assert "--only speed: allowed values are epoch, backends, bptt, denormals, startup, sweep, scaling" in capsys.readouterr().err


def test_scaling_moves_one_axis_at_a_time_from_the_base_point():
    points = scaling_points()
    assert points[0] == {"axis": "seq_len", "seq_len": 28, "hidden_size": 128, "batch_size": 128}
    assert len(points) == 3 + 3 + 2  # the base point once
    for p in points:
        moved = [k for k in ("seq_len", "hidden_size", "batch_size") if p[k] != points[0][k]]
        assert moved in ([], [p["axis"]])


def test_step_timer_takes_the_sides_in_turns_and_laps_what_ran_outside_it():
    calls = []
    timer = StepTimer().rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3 and [len(timer.wall[k]) for k in "ab"] == [3, 3]
    timer.start()
    time.sleep(0.02)  # a step the timer does not call: a Trainer's batch
    timer.lap("outside")
    assert timer.wall["outside"][0] >= 0.02 and not timer.cpu_s["outside"][0]  # no CPU clock unless asked


def test_plain_loop_started_into_its_order_visits_the_same_epoch_from_elsewhere():
    """The interleaved epoch benchmark starts its plain loop half an epoch in, so it never reads
    rows rnnexp's step has just read: same seed, same order, every sample once per epoch."""
    import torch

    seen = {}

    class Recorder(torch.nn.Module):  # stands in for SequenceModel: forward, loss, optimizer_factory
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.1)

        def forward(self, x):
            seen.setdefault(id(self), []).append(x[:, 0].long().tolist())
            return x[:, :1] * self.weight, None

        def loss(self, prediction, target):
            return ((prediction.squeeze(-1) - target) ** 2).mean()

    inputs = torch.arange(10.0).unsqueeze(1)  # sample i holds i
    from_start, half_in = Recorder(), Recorder()
    first = PlainLoop(from_start, inputs, torch.zeros(10), batch_size=3)
    second = PlainLoop(half_in, inputs, torch.zeros(10), batch_size=3, start_batch=2)
    for _ in range(4):  # one epoch: 3 + 3 + 3 + 1
        first.step()
        second.step()
    a, b = seen[id(from_start)], seen[id(half_in)]
    assert b == a[2:] + a[:2]
    assert sorted(i for batch in b for i in batch) == list(range(10))
    second.step()  # the next epoch starts at its own beginning, freshly shuffled
    assert len(seen[id(half_in)][-1]) == 3
