"""Sweeps on a real one-node SLURM cluster (scripts/slurm_cluster.sh): a job array with the launcher's
default sizes, a pre-empted and a time-warned task resumed from last.ckpt, a DDP job whose ranks come
from SLURM, a cancelled sweep rerun into its own folder, a request too large for any node, a task
that can never start. Then what needs no cluster: scontrol/squeue parsing and the size check on
recorded output, and the launcher's sizes from the config.

The end-to-end tests use the cluster of scripts/slurm_cluster.sh when `sinfo` answers (CI starts it
in .ci/run), or start one with `scripts/slurm_cluster.sh up` (root, Debian) and stop it after; where
it cannot start they are skipped with the script's reason, and where `sinfo` answers for another
cluster too (they requeue and cancel jobs). Job folders are found by their metrics.json, not by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from rnnexp.slurm import cluster

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHRINK = ["debug=fast", "data.source=bundled", "threads=1"]
# 3 epochs of 8 batches (24 optimizer steps), last.ckpt every 2 steps: a signal lands mid-training
LONGER = [*SHRINK, "trainer.max_epochs=3", "trainer.limit_train_batches=8", "model.hidden_size=32",
          "callbacks.periodic_checkpoint.every_n_train_steps=2", "callbacks.periodic_checkpoint.every_n_seconds=0",
          "callbacks.test_figures.enabled=false"]
CELLS = ["rnn", "lstm", "gru"]
SLURM = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.rnnexp.poll_s=0.5"]
COMPARED_PREFIXES = ("test/", "val/", "hp/", "train/acc", "train/loss")
CLUSTER_NAME = "rnnexp"  # scripts/slurm_cluster.sh's ClusterName


# -- the cluster ---------------------------------------------------------------------------------
def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def slurm_cluster():
    """The default partition of a running cluster, started here (and stopped after) if need be."""
    started = False
    if not _sinfo_answers():
        up = subprocess.run([str(REPO / "scripts" / "slurm_cluster.sh"), "up"], capture_output=True, text=True,
                            timeout=900, check=False)
        if up.returncode != 0:
            said = (up.stderr or up.stdout).strip().splitlines()
            pytest.skip(f"no SLURM cluster: scripts/slurm_cluster.sh up failed: {said[-1] if said else up.returncode}")
        started = True
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=False).stdout
    name = re.search(r"^ClusterName\s*=\s*(\S+)", config, re.MULTILINE)
    if not name or name.group(1) != CLUSTER_NAME:  # these tests requeue and cancel jobs: never on a real cluster
        pytest.skip(f"sinfo answers for cluster {name.group(1) if name else '?'}, not the test cluster of "
                    "scripts/slurm_cluster.sh: no test jobs are submitted to it")
    partition = cluster.query_partition(None)
    yield partition
    if started:
        subprocess.run([str(REPO / "scripts" / "slurm_cluster.sh"), "down"], capture_output=True, timeout=120,
                       check=False)


def train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNEXP_FAULT", None)
    return subprocess.run([str(BIN / "rnnexp-train"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RNNEXP_FAULT", None)
    return subprocess.Popen([str(BIN / "rnnexp-train"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def records(sweep: Path) -> dict[str, dict]:
    """{cell: record} of every job folder of a sweep."""
    found = {}
    for path in sweep.glob("*/metrics.json"):
        record = json.loads(path.read_text())
        found[record["hparams"]["cell.name"]] = {**record, "dir": path.parent}
    return found


def slurm_job_id(job_dir: Path) -> str:
    """The array task that ran a job folder (submitit's job id, which the launcher gives Hydra)."""
    return str(yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def squeue_state(job_id: str) -> str:
    done = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def release(job_id: str, deadline: float) -> None:
    """A requeued task waits ~2 minutes (its BeginTime) before SLURM starts it again: start it now."""
    while time.time() < deadline and squeue_state(job_id) != "PENDING":
        time.sleep(0.1)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)


def interrupt_mid_training(sweep: Path, proc: subprocess.Popen, signals: list[list[str]]) -> list[Path]:
    """For each command of `signals` in turn (e.g. ["scontrol", "requeue"]): wait for a job of the sweep
    to save last.ckpt after its first save (training has begun and goes on), then run the command
    on its array task. Returns the job folders hit, in order."""
    first_seen: dict[Path, int] = {}
    hit: list[Path] = []
    deadline = time.time() + 240
    while len(hit) < len(signals) and proc.poll() is None and time.time() < deadline:
        for last in sweep.glob("*/checkpoints/last.ckpt"):
            job = last.parents[1]
            try:
                mtime = last.stat().st_mtime_ns
            except FileNotFoundError:
                continue  # being renamed into place
            if job in hit or first_seen.setdefault(job, mtime) == mtime:
                continue
            job_id = slurm_job_id(job)
            subprocess.run([*signals[len(hit)], job_id], check=True, capture_output=True)
            hit.append(job)
            threading.Thread(target=release, args=(job_id, time.time() + 60), daemon=True).start()
            break
        time.sleep(0.02)
    return hit


def assert_same_run(got: dict, whole: dict) -> None:
    assert got["status"] == "completed", got.get("error")
    assert got["global_step"] == whole["global_step"]
    assert got["optimizer_steps_per_epoch"] == whole["optimizer_steps_per_epoch"]
    compared = sorted(k for k in whole["metrics"] if k.startswith(COMPARED_PREFIXES))
    assert "test/acc" in compared and "train/loss" in compared
    for key in compared:
        assert got["metrics"].get(key) == pytest.approx(whole["metrics"][key], abs=1e-6), key


# -- a 3-job array, two of its tasks interrupted -------------------------------------------------
@pytest.fixture(scope="module")
def array_sweep(slurm_cluster, tmp_path_factory) -> dict:
    """`-m hydra/launcher=submitit_slurm cell=rnn,lstm,gru` with the launcher's default sizes; one task
    requeued by `scontrol requeue` (SIGTERM) and one sent USR2 (the time-limit warning) mid-training.
    The same sweep on the basic launcher runs alongside, as the reference."""
    root = tmp_path_factory.mktemp("slurm_array")
    cells = f"cell={','.join(CELLS)}"
    reference = start_train(["-m", cells, *LONGER, f"hydra.sweep.dir={root / 'basic'}",
                             f"paths.output_root={root}"], root)
    proc = start_train([*SLURM, cells, *LONGER, f"hydra.sweep.dir={root / 'slurm'}", f"paths.output_root={root}"],
                       root)
    hit = interrupt_mid_training(root / "slurm", proc, [["scontrol", "requeue"], ["scancel", "--signal=USR2"]])
    code, output = finish(proc)
    ref_code, ref_output = finish(reference)
    assert ref_code == 0, ref_output[-3000:]
    return {"root": root, "code": code, "output": output, "hit": hit, "slurm": records(root / "slurm"),
            "basic": records(root / "basic")}


@pytest.mark.slow
@pytest.mark.slurm
def test_sweep_runs_as_one_job_array_with_default_sizes_and_matches_the_basic_launcher(array_sweep):
    assert array_sweep["code"] == 0, array_sweep["output"][-3000:]
    sweep = array_sweep["root"] / "slurm"
    scripts = list((sweep / ".submitit").glob("*/*_submission.sh"))
    assert len(scripts) == 1  # one sbatch for the whole sweep
    script = scripts[0].read_text()
    assert "#SBATCH --array=0-2%3" in script
    # the defaults fit a small node: threads=1 -> 1 CPU, 4 GB; torch's threads follow the allocation
    assert "#SBATCH --cpus-per-task=1\n" in script and "#SBATCH --mem=4GB\n" in script
    assert "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK" in script
    got, whole = array_sweep["slurm"], array_sweep["basic"]
    assert sorted(got) == sorted(whole) == sorted(CELLS)
    for cell in CELLS:
        job = got[cell]["dir"]
        assert job.parent == sweep
        assert (job / "checkpoints" / "last.ckpt").is_file() and list(job.glob("events.out.tfevents.*"))
        assert_same_run(got[cell], whole[cell])

    from rnnexp.compare import main as compare

    assert compare([str(sweep), "--out", str(array_sweep["root"] / "compare")]) == 0
    rows = (array_sweep["root"] / "compare" / "runs.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(CELLS)


@pytest.mark.slow
@pytest.mark.slurm
def test_requeued_and_time_warned_tasks_resume_from_last_checkpoint(array_sweep):
    requeued, warned = array_sweep["hit"]  # both were interrupted while training
    logs = {job: "".join(p.read_text() for p in (array_sweep["root"] / "slurm" / ".submitit").glob(
        f"{slurm_job_id(job)}/*_log.*")) for job in (requeued, warned)}
    for job, how in ((requeued, "scontrol requeue"), (warned, "USR2")):
        record = next(r for r in array_sweep["slurm"].values() if r["dir"] == job)
        assert len(record.get("resumes", [])) == 1, (how, record.get("resumes"))
        # the second start of the task continued from a last.ckpt written during training
        match = re.search(r"resuming .* from .*last\.ckpt \(step (\d+)\)", logs[job])
        assert match and 0 < int(match.group(1)) < record["global_step"], (how, logs[job][-2000:])
        assert_same_run(record, array_sweep["basic"][record["hparams"]["cell.name"]])
    # SIGTERM: the run saved last.ckpt at the end of its batch and stopped, as interrupted
    requeued_record = next(r for r in array_sweep["slurm"].values() if r["dir"] == requeued)
    assert requeued_record["resumes"][0]["previous_status"] == "interrupted"
    # USR2: submitit's handler requeued the task itself and exited (SystemExit): interrupted, not failed
    assert "this job is preempted" in logs[warned] and "Requeued job" in logs[warned]
    warned_record = next(r for r in array_sweep["slurm"].values() if r["dir"] == warned)
    assert warned_record["resumes"][0]["previous_status"] == "interrupted"


# -- DDP: ranks from SLURM -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.slurm
def test_ddp_job_takes_two_ranks_from_slurm_and_writes_one_record(slurm_cluster, tmp_path):
    if max(n.cpus for n in slurm_cluster.nodes) < 2:
        pytest.skip("a 2-task job needs a node with 2 CPUs")
    sweep = tmp_path / "sweep"
    done = train([*SLURM, "trainer=ddp", "cell=lstm", *SHRINK, f"hydra.sweep.dir={sweep}",
                  f"paths.output_root={tmp_path}"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    found = list(sweep.rglob("metrics.json"))
    assert len(found) == 1
    record = json.loads(found[0].read_text())
    # 4 batches of 64 per rank over the 512 training sequences: 4 optimizer steps, both ranks in step
    assert record["status"] == "completed" and record["global_step"] == 4
    logs = sorted(p.name for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and logs[1].endswith("_1_log.out")  # SLURM started both ranks (srun tasks)
    rank1 = next((sweep / ".submitit").glob("*/*_1_log.out")).read_text()
    assert "global_rank=1(2)" in rank1 and "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1  # Lightning's rank 1 = SLURM's
    # Lightning did not start a process itself: its re-run command names its Hydra job train_ddp_process_1
    assert not list(sweep.rglob("train_ddp_process_1.log"))


# -- a cancelled sweep, rerun --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_sweep_rerun_skips_finished_jobs_and_resumes_the_other(array_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    command = [*SLURM, "cell=rnn,lstm", *LONGER, "hydra.launcher.array_parallelism=1", f"hydra.sweep.dir={sweep}",
               f"paths.output_root={tmp_path}"]
    proc = start_train(command, tmp_path)
    # once the first job finished and the second is training, the array is cancelled (SIGTERM)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(
            [r for r in records(sweep).values() if r["status"] == "completed"]) < 1:
        time.sleep(0.05)
    hit = interrupt_mid_training(sweep, proc, [["scancel"]])
    code, output = finish(proc)
    assert len(hit) == 1, output[-3000:]
    assert code == 1 and "ended CANCELLED without a result" in output, output[-3000:]
    assert "hydra.sweep.dir=" in output.strip().splitlines()[-1]
    first = next(r for r in records(sweep).values() if r["status"] == "completed")
    assert records(sweep)[json.loads((hit[0] / "metrics.json").read_text())["hparams"]["cell.name"]][
        "status"] == "interrupted"
    kept = [first["dir"] / "metrics.json", *(first["dir"] / "checkpoints").iterdir()]
    stamps = {p: p.stat().st_mtime_ns for p in kept}

    rerun = train(command, tmp_path)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the finished job: not retrained
    got = records(sweep)
    assert sorted(got) == ["lstm", "rnn"]
    resumed = next(r for r in got.values() if r["dir"] == hit[0])
    assert len(resumed["resumes"]) == 1
    for cell, record in got.items():
        assert_same_run(record, array_sweep["basic"][cell])


# -- requests that cannot run --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.slurm
def test_request_larger_than_every_node_is_refused_before_submitting(slurm_cluster, tmp_path):
    cpus = max(n.cpus for n in slurm_cluster.nodes)
    memory_gb = max(n.memory_mb for n in slurm_cluster.nodes) / 1024
    asks = {"threads": [f"threads={cpus + 2}"],  # cpus_per_task follows threads
            "mem": ["threads=1", f"hydra.launcher.mem_gb={int(memory_gb) + 8}"]}
    procs = {name: start_train([*SLURM, "cell=rnn,gru", *SHRINK[:2], *extra, f"hydra.sweep.dir={tmp_path / name}",
                                f"paths.output_root={tmp_path}"], tmp_path) for name, extra in asks.items()}
    results = {name: finish(proc, timeout=120) for name, proc in procs.items()}
    where = f"on any node of partition {slurm_cluster.name}"
    expected = {"threads": f"rnnexp-train: error: hydra.launcher.cpus_per_task={cpus + 2} (from threads={cpus + 2}) "
                           f"> {cpus} CPUs {where}",
                "mem": f"rnnexp-train: error: hydra.launcher.mem_gb={int(memory_gb) + 8} > "}
    for name, (code, output) in results.items():
        assert code == 2, output[-2000:]
        last = output.strip().splitlines()[-1]
        assert last.startswith(expected[name]) and where in last, last
        assert "Traceback" not in output
        assert not (tmp_path / name / ".submitit").exists()  # nothing was submitted


@pytest.mark.slow
@pytest.mark.slurm
def test_task_pending_for_a_reason_that_cannot_resolve_stops_the_sweep(slurm_cluster, tmp_path):
    cpus = max(n.cpus for n in slurm_cluster.nodes)
    started = time.time()
    done = train([*SLURM, "cell=rnn,gru", *SHRINK[:2], f"threads={cpus + 1}", "hydra.launcher.rnnexp.check_sizes=false",
                  "hydra.launcher.rnnexp.stop_pending_after_s=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                  f"paths.output_root={tmp_path}"], tmp_path, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert time.time() - started < 60
    lines = output.strip().splitlines()
    assert sum("pending: PartitionConfig" in line for line in lines) == 2  # one line per task
    assert "cancelled the array" in lines[-1] and "hydra.sweep.dir=" in lines[-1]
    array_id = next((tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh")).parent.name
    deadline = time.time() + 20
    while time.time() < deadline and "PENDING" in squeue_state(array_id):
        time.sleep(0.2)
    assert "PENDING" not in squeue_state(array_id)  # nothing left waiting in the queue


# -- without a cluster ---------------------------------------------------------------------------
PARTITIONS = """PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerCPU=12052 MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=24105M,node=1,billing=2
PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE MaxNodes=2 MaxTime=1-12:00:00 MinNodes=0 MaxCPUsPerNode=32 Nodes=g[01-02] State=UP TotalCPUs=128 TotalNodes=2 MaxMemPerNode=256000
"""
# the default (multi-line) form, as `scontrol show node` prints it without -o
NODES = """NodeName=vm Arch=x86_64 CoresPerSocket=1
   CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.21
   AvailableFeatures=(null)
   Gres=(null)
   NodeAddr=vm NodeHostName=vm Version=22.05.8
   OS=Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0
   RealMemory=24105 AllocMem=0 FreeMem=6424 Sockets=2 Boards=1
   State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A
   Partitions=debug

NodeName=g01 Arch=x86_64 CoresPerSocket=32
   CPUAlloc=0 CPUEfctv=62 CPUTot=64 CPULoad=0.00
   Gres=gpu:a100:4(S:0-1)
   RealMemory=515000 AllocMem=0 FreeMem=500000 MemSpecLimit=2000 Sockets=2
   State=DOWN+DRAIN ThreadsPerCore=1 Reason=Not responding [slurm@2026-11-30T01:00:00]
   Partitions=gpu

NodeName=g02 CPUEfctv=64 CPUTot=64 Gres=gpu:a100:2,gpu:v100:2 RealMemory=515000 Partitions=gpu,debug2
"""


def test_scontrol_records_parse_in_one_line_and_multi_line_form():
    partitions = cluster.parse_records(PARTITIONS)
    assert [p["PartitionName"] for p in partitions] == ["debug", "gpu"]
    assert partitions[0]["TRES"] == "cpu=2,mem=24105M,node=1,billing=2"  # '=' inside a value
    nodes = cluster.parse_records(NODES)
    assert [n["NodeName"] for n in nodes] == ["vm", "g01", "g02"]
    assert nodes[0]["OS"] == "Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0"  # spaces inside a value
    assert nodes[1]["Reason"] == "Not responding [slurm@2026-11-30T01:00:00]"
    assert nodes[1]["State"] == "DOWN+DRAIN" and nodes[2]["Partitions"] == "gpu,debug2"


def test_scontrol_values_limits_and_gpus():
    assert cluster.minutes("UNLIMITED") is None and cluster.minutes("1-12:00:00") == 2160
    assert cluster.minutes("04:00:00") == 240 and cluster.minutes("30:00") == 30 and cluster.minutes("2-0") == 2880
    assert cluster.gpus_of("(null)") == 0 and cluster.gpus_of("gpu:4") == 4
    assert cluster.gpus_of("gpu:a100:4(S:0-1)") == 4 and cluster.gpus_of("gpu:a100:2,gpu:v100:2,mps:100") == 4


def test_default_partition_and_its_nodes():
    partitions, nodes = cluster.parse_records(PARTITIONS), cluster.parse_records(NODES)
    debug = cluster.partition_from(partitions, None, nodes)
    assert debug.name == "debug" and [n.name for n in debug.nodes] == ["vm"]
    assert debug.nodes[0] == cluster.Node("vm", 2, 24105, 0) and debug.max_time_min is None
    gpu = cluster.partition_from(partitions, "gpu", nodes)
    # effective CPUs, memory less the specialised share; a drained node is still one of the partition's
    assert [(n.cpus, n.memory_mb, n.gpus) for n in gpu.nodes] == [(62, 513000, 4), (64, 515000, 4)]
    assert gpu.max_time_min == 2160 and gpu.max_cpus_per_node == 32 and gpu.max_nodes == 2
    with pytest.raises(KeyError, match=r"hydra.launcher.partition=big: no such partition; partitions: debug, gpu"):
        cluster.partition_from(partitions, "big", nodes)


@pytest.mark.parametrize("params,problem", [
    ({"cpus_per_task": 2, "mem_gb": 4}, None),  # exactly the node
    ({"cpus_per_task": 4}, "hydra.launcher.cpus_per_task=4 > 2 CPUs on any node of partition debug"),
    ({"cpus_per_task": 1, "tasks_per_node": 3},
     "hydra.launcher.cpus_per_task=1 x hydra.launcher.tasks_per_node=3 = 3 > 2 CPUs on any node of partition debug"),
    ({"mem_gb": 24}, "hydra.launcher.mem_gb=24 > 23.5 GB (24105 MB) on any node of partition debug"),
    ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1 > 0 GPUs on any node of partition debug"),
    ({"nodes": 2}, "hydra.launcher.nodes=2 > 1 nodes in partition debug"),
])
def test_request_problem_names_the_first_key_that_does_not_fit(params, problem):
    debug = cluster.partition_from(cluster.parse_records(PARTITIONS), None, cluster.parse_records(NODES))
    assert cluster.request_problem({"tasks_per_node": 1, "nodes": 1, "timeout_min": 240, **params}, debug) == problem


def test_partition_limits_cap_what_its_nodes_have():
    gpu = cluster.partition_from(cluster.parse_records(PARTITIONS), "gpu", cluster.parse_records(NODES))
    fits = {"cpus_per_task": 8, "tasks_per_node": 4, "mem_gb": 250, "gpus_per_node": 4, "nodes": 2,
            "timeout_min": 2160}
    assert cluster.request_problem(fits, gpu) is None
    assert cluster.request_problem({**fits, "tasks_per_node": 5}, gpu).endswith(
        "= 40 > 32 CPUs on any node of partition gpu")
    assert cluster.request_problem({**fits, "timeout_min": 2161}, gpu) == \
        "hydra.launcher.timeout_min=2161 > 2160 min, the time limit of partition gpu"


def test_squeue_states_and_reasons_that_never_resolve():
    states = cluster.parse_squeue("12_0|PENDING|PartitionConfig\n12_1|RUNNING|None\n"
                                  "12_2|PENDING|ReqNodeNotAvail, UnavailableNodes:vm\n13|PENDING|Resources\n")
    assert states["12_1"] == ("RUNNING", "None") and states["13"] == ("PENDING", "Resources")
    reasons = ["PartitionConfig", "ReqNodeNotAvail"]
    assert cluster.never_starts(*states["12_0"], reasons) and cluster.never_starts(*states["12_2"], reasons)
    assert not cluster.never_starts(*states["13"], reasons)  # waits for a free node: resolves
    assert not cluster.never_starts("RUNNING", "PartitionConfig", reasons)


@pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema with the same name")
def test_launcher_cpus_follow_threads_and_defaults_fit_a_small_node(make_cfg):
    from hydra.utils import instantiate

    for threads, cpus in ((0, 1), (3, 3)):
        cfg = make_cfg(["hydra/launcher=submitit_slurm", f"threads={threads}"], shrink=False)
        launcher = instantiate(cfg.hydra.launcher)
        assert type(launcher).__name__ == "SlurmLauncher" and launcher.params["cpus_per_task"] == cpus
        assert launcher.params["mem_gb"] <= 4 and launcher.params["tasks_per_node"] == 1
        assert launcher.check_sizes and "PartitionConfig" in launcher.never_start_reasons
    ddp = make_cfg(["hydra/launcher=submitit_slurm", "trainer=ddp"], shrink=False)
    assert instantiate(ddp.hydra.launcher).params["tasks_per_node"] == 2  # one srun task per device


def test_sigterm_saves_last_checkpoint_at_the_end_of_the_batch_and_stops(tmp_path):
    """SLURM's SIGTERM (pre-emption, requeue, scancel), as Lightning reports it: last.ckpt of the batch
    it arrived in, then the run stops as interrupted; one that arrives after that batch's check
    (Lightning stops the run itself) still marks the run interrupted."""
    from test_checkpoint_cadence import _Trainer

    from rnnexp.callbacks.checkpointing import LastCheckpoint

    callback, trainer = LastCheckpoint(tmp_path, every_n_train_steps=5, every_n_seconds=0), _Trainer()
    callback.on_train_start(trainer, None)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM at step 3"):
        for batch in range(6):
            callback.on_train_batch_start(trainer, None, None, batch)
            trainer.global_step += 1
            trainer.received_sigterm = trainer.global_step == 3  # arrives during the third batch
            callback.on_train_batch_end(trainer, None, None, None, batch)
    assert trainer.saved == [0, 3] and callback.interrupted

    late, trainer = LastCheckpoint(tmp_path, every_n_seconds=0), _Trainer()
    late.on_train_start(trainer, None)
    trainer.received_sigterm = True
    late.on_exception(trainer, None, SystemExit())  # Lightning's SIGTERMException
    assert late.interrupted and trainer.saved == [0]


# -- one Optuna study, its workers the tasks of a job array (issue 16 on this cluster) ---------------
@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.postgres
def test_a_job_array_of_sweepers_pulls_trials_from_one_postgresql_study(slurm_cluster, fresh_database, tmp_path):
    """`sbatch --array=0-1` of the same search command on one PostgreSQL study: each task is a sweeper
    that asks the study for trials; none runs twice, none is lost, the numbers are unique."""
    import shlex

    import optuna
    from optuna.trial import TrialState

    search = [str(BIN / "rnnexp-train"), "-m", "hparams_search=optuna", *SHRINK, "trainer.limit_train_batches=2",
              "cell=gru", "model.hidden_size=32", f"paths.output_root={tmp_path}",
              f"hydra.sweeper.storage={fresh_database}", "hydra.sweeper.study_name=array",
              "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=none"]
    script = tmp_path / "search.sh"
    # each array task its own sweep folder; $SLURM_ARRAY_TASK_ID is read by the task's shell
    script.write_text("#!/bin/bash\nset -e\nexport OMP_NUM_THREADS=1\n"
                      f"{shlex.join(search)} hydra.sweep.dir={tmp_path}/worker$SLURM_ARRAY_TASK_ID\n")
    done = subprocess.run(["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "--mem=1G",
                           f"--output={tmp_path}/task_%a.log", str(script)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=420, check=False)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("task_*.log")))
    assert done.returncode == 0, (done.stdout + done.stderr + logs)[-3000:]

    study = optuna.load_study(storage=fresh_database, study_name="array")
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # none lost, none left RUNNING
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("metrics.json"))]
    assert sorted(r["trial"]["number"] for r in runs) == list(range(4))  # each trial ran once
    assert sorted(len(list((tmp_path / f"worker{i}").rglob("metrics.json"))) for i in range(2)) == [2, 2]
    for run in runs:
        assert study.trials[run["trial"]["number"]].user_attrs["run_dir"] == run["run_dir"]
    assert study.best_value == pytest.approx(max(r["optimized_value"] for r in runs))
