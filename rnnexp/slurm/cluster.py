"""What a SLURM cluster offers and what its queue says, read from `scontrol` and `squeue`.

Used by rnnexp's launcher (hydra_plugins/rnnexp_slurm_launcher) before and after it submits a sweep:
  - `request_problem`: a request larger than every node of the partition (more CPUs, memory or
    GPUs than any node has, more nodes than the partition holds, a longer time than it allows)
    would stay PENDING for ever; it is refused before submitting, in one line naming the key.
  - `task_states` + `never_starts`: a task SLURM keeps pending for a reason that does not go away
    by waiting (PartitionConfig, ReqNodeNotAvail, ...) stops the sweep instead of being polled.
Parsing is separate from running the commands, so it is tested on recorded output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

# `Key=value` at the start of a field; a value runs to the next field (values may hold spaces:
# OS=Linux 6.1.0 #1 SMP ..., Reason=Not responding [slurm@...])
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")
UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", "")


class SlurmQueryError(RuntimeError):
    """A SLURM command is missing or failed: the message says which and what it printed."""


def parse_records(text: str) -> list[dict[str, str]]:
    """`scontrol show partition|node|job` output -> one dict per record. Takes both the one-line
    form (`scontrol -o`) and the default one (a record over several indented lines, records
    separated by a blank line)."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    if len(blocks) == 1 and "\n" in blocks[0] and not blocks[0].splitlines()[1].startswith((" ", "\t")):
        blocks = blocks[0].splitlines()  # `-o`: one record a line
    records = []
    for block in blocks:
        flat = " ".join(line.strip() for line in block.splitlines())
        starts = list(_FIELD.finditer(flat))
        record = {}
        for here, after in zip(starts, [*starts[1:], None]):
            end = after.start() if after is not None else len(flat)
            record[here.group(1)] = flat[here.end():end].strip()
        if record:
            records.append(record)
    return records


def number(value: str | None) -> float | None:
    """A count or megabytes from scontrol; None for UNLIMITED and the like."""
    if value is None or value.strip().upper() in UNLIMITED:
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)?)", value)
    return float(match.group(1)) if match else None


def minutes(value: str | None) -> float | None:
    """A SLURM time limit (`[days-]hours:minutes:seconds`, `minutes:seconds`, `minutes`) in minutes;
    None for UNLIMITED."""
    if value is None or value.strip().upper() in UNLIMITED:
        return None
    days, _, clock = value.strip().rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        parts += [0.0] * (3 - len(parts))
        hours, mins, secs = parts
    elif len(parts) == 3:
        hours, mins, secs = parts
    elif len(parts) == 2:
        hours, (mins, secs) = 0.0, parts
    else:
        hours, mins, secs = 0.0, parts[0], 0.0
    return float(days or 0) * 1440 + hours * 60 + mins + secs / 60


def gpus_of(gres: str | None) -> int:
    """GPUs in a node's Gres (`gpu:4`, `gpu:a100:2(S:0-1),gpu:v100:2`, `(null)`)."""
    total = 0
    for item in re.split(r",(?![^(]*\))", gres or ""):
        fields = re.sub(r"\(.*?\)", "", item).split(":")
        if fields[0].strip() == "gpu" and len(fields) >= 2 and fields[-1].strip().isdigit():
            total += int(fields[-1])
    return total


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    memory_mb: float
    gpus: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[Node, ...]
    max_nodes: float | None
    max_time_min: float | None
    max_cpus_per_node: float | None
    max_mem_per_node_mb: float | None


def partition_from(records: list[dict[str, str]], name: str | None, node_records: list[dict[str, str]]) -> Partition:
    """The partition `name` (None: the default one) with its nodes, from `scontrol show partition`
    and `scontrol show node` records. KeyError(message) if there is no such partition."""
    known = [r.get("PartitionName", "") for r in records]
    if name is None:
        chosen = next((r for r in records if r.get("Default", "").upper() == "YES"), None)
        if chosen is None:
            raise KeyError(f"no default partition; set hydra.launcher.partition= one of: {', '.join(known)}")
    else:
        chosen = next((r for r in records if r.get("PartitionName") == name), None)
        if chosen is None:
            raise KeyError(f"hydra.launcher.partition={name}: no such partition; partitions: {', '.join(known)}")
    pname = chosen["PartitionName"]
    nodes = []
    for record in node_records:
        if pname not in record.get("Partitions", "").split(","):
            continue
        cpus = number(record.get("CPUEfctv")) or number(record.get("CPUTot")) or 0
        memory = (number(record.get("RealMemory")) or 0) - (number(record.get("MemSpecLimit")) or 0)
        nodes.append(Node(record.get("NodeName", "?"), int(cpus), memory, gpus_of(record.get("Gres"))))
    return Partition(pname, tuple(nodes), number(chosen.get("MaxNodes")), minutes(chosen.get("MaxTime")),
                     number(chosen.get("MaxCPUsPerNode")), number(chosen.get("MaxMemPerNode")))


def _capped(values, cap: float | None) -> float:
    best = max(values, default=0)
    return best if cap is None else min(best, cap)


def request_problem(params: dict, partition: Partition, threads: int = 0) -> str | None:
    """Why the launcher request `params` (hydra.launcher.*) cannot run on any node of `partition`,
    in one line naming the key; None if it fits. `threads`: the run's, which cpus_per_task follows."""
    where = f"partition {partition.name}"
    if not partition.nodes:
        return f"hydra.launcher.partition={partition.name}: the partition has no nodes"
    tasks = int(params.get("tasks_per_node") or 1)
    cpus_per_task = int(params.get("cpus_per_task") or 1)
    cpus = _capped((n.cpus for n in partition.nodes), partition.max_cpus_per_node)
    if cpus_per_task * tasks > cpus:
        asked = f"hydra.launcher.cpus_per_task={cpus_per_task}" + (
            f" (from threads={threads})" if threads == cpus_per_task else "")
        if tasks > 1:
            asked += f" x hydra.launcher.tasks_per_node={tasks} = {cpus_per_task * tasks}"
        return f"{asked} > {cpus:g} CPUs on any node of {where}"
    mem_gb = params.get("mem_gb")
    memory = _capped((n.memory_mb for n in partition.nodes), partition.max_mem_per_node_mb)
    if mem_gb is not None and float(mem_gb) * 1024 > memory:
        return f"hydra.launcher.mem_gb={mem_gb:g} > {memory / 1024:.1f} GB ({memory:g} MB) on any node of {where}"
    gpus = int(params.get("gpus_per_node") or 0)
    most_gpus = max((n.gpus for n in partition.nodes), default=0)
    if gpus > most_gpus:
        return f"hydra.launcher.gpus_per_node={gpus} > {most_gpus} GPUs on any node of {where}"
    nodes = int(params.get("nodes") or 1)
    most_nodes = _capped([len(partition.nodes)], partition.max_nodes)
    if nodes > most_nodes:
        return f"hydra.launcher.nodes={nodes} > {most_nodes:g} nodes in {where}"
    timeout = params.get("timeout_min")
    if timeout is not None and partition.max_time_min is not None and float(timeout) > partition.max_time_min:
        return f"hydra.launcher.timeout_min={timeout} > {partition.max_time_min:g} min, the time limit of {where}"
    return None


def run(command: list[str], timeout_s: float = 30) -> str:
    if shutil.which(command[0]) is None:
        raise SlurmQueryError(f"{command[0]} not found: no SLURM client here (try it locally with "
                              "scripts/slurm_cluster.sh up, or use hydra/launcher=submitit_local)")
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise SlurmQueryError(f"{' '.join(command)}: no answer in {timeout_s:g} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmQueryError(f"{' '.join(command)} failed: {said[-1] if said else f'exit {done.returncode}'}")
    return done.stdout


def query_partition(name: str | None) -> Partition:
    partitions = parse_records(run(["scontrol", "-o", "show", "partition"]))
    nodes = parse_records(run(["scontrol", "-o", "show", "node"]))
    return partition_from(partitions, name, nodes)


# -- the queue ---------------------------------------------------------------------------------
SQUEUE_FORMAT = "%i|%T|%r"  # job id (array tasks as <array>_<index>), state, reason


def parse_squeue(text: str) -> dict[str, tuple[str, str]]:
    """`squeue -h -r -o '%i|%T|%r'` -> {job id: (state, reason)}."""
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            states[parts[0]] = (parts[1].strip(), parts[2].strip())
    return states


def task_states(array_job_id: str) -> dict[str, tuple[str, str]]:
    """The state and reason of every task of a job array that slurmctld still knows (finished
    ones for MinJobAge, 300 s by default)."""
    try:
        return parse_squeue(run(["squeue", "-h", "-r", "-t", "all", "-j", array_job_id, "-o", SQUEUE_FORMAT]))
    except SlurmQueryError as exc:
        if "Invalid job id" in str(exc):  # every task ended longer than MinJobAge ago
            return {}
        raise


def never_starts(state: str, reason: str, reasons) -> bool:
    """A pending task whose reason is one of `reasons`: `ReqNodeNotAvail, UnavailableNodes:vm`
    matches `ReqNodeNotAvail`."""
    head = reason.split(",")[0].strip()
    return state == "PENDING" and head in set(reasons)


def cancel(job_id: str) -> None:
    run(["scancel", job_id])
