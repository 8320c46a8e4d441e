"""The sections of `rnnexp-bench`, `run_<name>(args) -> dict` (setup, rows, checks), all timed by
`harness.StepTimer`; what needs a fresh process runs through `harness.in_child`."""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from rnnexp import build
from rnnexp.bench import harness
from rnnexp.bench.config import compose_run_config, run_overrides
from rnnexp.data.loaders import InMemorySequences, batch_loader
from rnnexp.data.task import TaskSpec
from rnnexp.nn.recurrent import readout

VARIANTS = ("plain", "plain, 2nd copy", "rnnexp, bar off", "rnnexp, bar on")
TARGETS = {"rnnexp, bar off": 1.05, "rnnexp, bar on": 1.10}
EPOCH = 60_000  # step times are extrapolated to an epoch of 60k samples
BASE = {"seq_len": 28, "hidden_size": 128, "batch_size": 128}
GPU_CHECK = {"name": "GPU: explicit+compile / cuDNN native, LSTM-128 (scaling, --device cuda)", "value": None,
             "target": None, "detail": "unmeasured: run rnnexp-bench --device cuda --only scaling --scaling-backends "
                                       "native,explicit+compile on a GPU machine"}
PROBE = "+callbacks.bench_probe._target_=rnnexp.callbacks.run_probe.RunProbe"  # -> <run dir>/bench_probe.json


def pick(a, *names: str, **more) -> dict:
    return {**{name: getattr(a, name) for name in names}, **more}


class PlainLoop:
    """The loop a researcher writes by hand for a SequenceModel: the next batch of a seeded shuffle of
    the in-memory tensors, forward, loss, backward, step; no logging, metrics or checks. `start_batch`
    starts the first epoch that many batches into its order (the ones before it come at its end)."""

    def __init__(self, module, inputs, targets, batch_size: int, device="cpu", precision="32-true", start_batch=0):
        self.module, self.inputs, self.targets = module.to(device).train(), inputs, targets
        self.batch_size, self.device, self.precision, self.start_batch = batch_size, device, precision, start_batch
        self.optimizer = module.optimizer_factory(params=module.parameters())
        self.scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")  # disabled: passes through
        self.generator, self.batches = torch.Generator().manual_seed(0), iter(())  # rnnexp's data seed too

    def step(self) -> None:
        index = next(self.batches, None)
        if index is None:  # a new epoch: a new order
            order = torch.randperm(len(self.inputs), generator=self.generator).split(self.batch_size)
            start, self.start_batch = self.start_batch % len(order), 0
            self.batches = iter(order[start:] + order[:start])
            index = next(self.batches)
        x, y = (t[index].to(self.device, non_blocking=True) for t in (self.inputs, self.targets))
        self.optimizer.zero_grad(set_to_none=True)
        with harness.autocast_for(self.precision, self.device):
            loss = self.module.loss(self.module(x)[0], y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def run_epoch(a) -> dict:
    """rnnexp's training epoch (a Trainer built from the real config as `rnnexp-train` builds it) against
    a plain loop training its own copy of the model (same seed and weights) on the same in-memory data,
    interleaved step by step. The plain loop starts half an epoch into the same shuffled order, so it
    never reads rows rnnexp's step has just pulled into the caches. "plain, 2nd copy": a second plain
    loop in rnnexp's place, whose ratio is the method's bias and noise (1 when there is none). Each
    repeat is a fresh Trainer and fresh plain models; per variant the median of the repeats' ratios."""
    import pytorch_lightning as pl  # its import sets its loggers' levels: ours come after it

    for name in ("pytorch_lightning", "lightning_fabric"):  # start-up notices say nothing about a timing
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|The given NumPy array is not writable)")
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-epoch-") as scratch:
        runs = iter(range(10_000))

        def config(progress_bar: bool = False, steps: int = a.steps):
            command = [*run_overrides(a, progress_bar=progress_bar), "seed=0", "trainer.max_epochs=1",
                       f"trainer.limit_train_batches={steps or 1.0}", *a.override]
            return compose_run_config(command, Path(scratch) / f"run{next(runs)}")

        datamodule = build.build_datamodule(config()).prepare()
        train, per_epoch = datamodule.splits[0], len(datamodule.train_dataloader())

        def plain_loop(start_batch: int = per_epoch // 2) -> PlainLoop:
            pl.seed_everything(0, verbose=False)
            module = build.build_module(config(), datamodule.task)  # the same initial weights as rnnexp's
            return PlainLoop(module, train.inputs, train.targets, a.batch_size, a.device, a.precision, start_batch)

        # rnnexp's step: from the end of a plain step to the end of its batch (not set-up nor validation)
        def run(variant: str, steps: int = a.steps) -> harness.StepTimer:
            timer, plain = harness.StepTimer(a.device), plain_loop()
            if variant == "plain, 2nd copy":  # the same pairing, a plain loop in rnnexp's place
                return timer.rounds({"rnnexp": plain_loop(0).step, "plain": plain.step}, steps or per_epoch)

            class PlainAfterEachStep(pl.Callback):
                def on_train_epoch_start(self, trainer, pl_module):
                    timer.start()

                def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                    timer.lap("rnnexp")
                    timer.step("plain", plain.step)

            cfg = config(variant.endswith("on"), steps)
            build.validate(cfg)
            build.configure_torch(cfg)  # threads and denormal flushing, which the plain side then shares
            pl.seed_everything(0, workers=True, verbose=False)
            module = build.build_module(cfg, datamodule.task)  # as `rnnexp.training.train` builds it all
            callbacks, manual = [*build.build_callbacks(cfg), PlainAfterEachStep()], not module.automatic_optimization
            trainer = build.build_trainer(cfg, callbacks, build.build_loggers(cfg), manual_optimization=manual)
            with contextlib.redirect_stdout(io.StringIO()):  # the model summary table: noise here
                trainer.fit(module, datamodule=datamodule)
            if len(timer.wall["rnnexp"]) != trainer.num_training_batches:
                raise RuntimeError("the training epoch did not finish its batches")
            return timer

        run("rnnexp, bar off", steps=5)  # warm-up: first calls pay for lazy initialisation
        sums = {name: [] for name in VARIANTS[1:]}  # per repeat: (rnnexp's, plain's) summed step times
        for r in range(a.repeats):
            for name in (VARIANTS[1:] if r % 2 == 0 else VARIANTS[:0:-1]):
                gc.collect()  # each run starts clean of the garbage the previous one left
                sums[name].append([sum(times) for times in run(name).wall.values()])
    steps = min(a.steps or per_epoch, per_epoch)

    def row(variant: str, wall: list[float], ratios=()) -> dict:
        median = statistics.median(wall)
        return {"variant": variant, "wall_s": median, "steps": steps, "ms_per_step": 1e3 * median / steps,
                "epoch_s": median / steps * per_epoch, "all_wall_s": wall, **({"ratio": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios), "all_ratios": ratios} if ratios else {})}

    rows = [row("plain", [p for name in VARIANTS[2:] for _, p in sums[name]])]
    rows += [row(name, [r for r, _ in runs], [r / p for r, p in runs]) for name, runs in sums.items()]
    checks = [{"name": f"epoch: {r['variant']} / plain", "value": r["ratio"], "target": TARGETS[r["variant"]],
               "detail": f"{r['ms_per_step']:.2f} vs {rows[0]['ms_per_step']:.2f} ms/step; repeats "
                         f"{r['ratio_min']:.3f}-{r['ratio_max']:.3f}; harness check (plain / plain) "
                         f"{rows[1]['ratio']:.3f}"} for r in rows if r["variant"] in TARGETS]
    setup = pick(a, "cell", "hidden_size", "batch_size", "steps", "threads", "dataset", "source", "device",
                 "precision", "repeats", seed=0, overrides=a.override, source_used=datamodule.source_used,
                 train_samples=len(train), threads_used=torch.get_num_threads())
    return {"setup": setup, "rows": rows, "checks": checks}


@functools.lru_cache  # composing takes a good part of a second; scaling asks for one config many times
def model_config(*overrides: str):
    return compose_run_config(list(overrides), tempfile.gettempdir())


def training_step(a, cell: str, backend: str, seq_len: int, hidden_size: int, batch_size: int, features: int = 0,
                  overrides: tuple[str, ...] = ()):
    """A step (forward, cross-entropy, backward, Adam) of the config's encoder and a linear head on its
    final state, on one batch of random images as T steps of 784 / T pixels (or `features`), seed 0."""
    cfg = model_config(f"cell={cell}", f"model.backend={backend.removesuffix('+compile')}",
                       f"model.hidden_size={hidden_size}", f"model.compile={backend.endswith('+compile')}", *overrides)
    build.configure_torch(cfg)  # denormal flushing as a run has it (threads=0 in cfg: the caller's stay)
    features, device = features or 784 // seq_len, a.device
    torch.manual_seed(0)
    encoder = build.build_encoder(cfg, TaskSpec("classify_last", features, 10, seq_len)).to(device)
    if cfg.model.compile:
        encoder.core.compile()  # as build_module does
    head = torch.nn.Linear(encoder.output_size, 10).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.rand(batch_size, seq_len, features, device=device), torch.randint(0, 10, (batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with harness.autocast_for(a.precision, device):
            outputs, state = encoder(x)
            last = readout(outputs, state, "final_state", encoder.num_layers, encoder.bidirectional)
            torch.nn.functional.cross_entropy(head(last), y).backward()
        optimizer.step()
    return step


def run_backends(a) -> dict:
    """Native vs explicit backend, eager and compiled (model.compile), their steps interleaved."""
    rows, checks, backends = [], [], ["native", "explicit", *([] if a.no_compile else ["explicit+compile"])]
    for cell in a.cells:
        steps = {b: training_step(a, cell, b, 28, a.hidden_size, a.batch_size) for b in backends}
        warmup = harness.StepTimer(a.device).rounds(steps, 3)  # the first steps load kernels, and compile
        timer = harness.StepTimer(a.device, cpu=True).rounds(steps, a.backend_steps * a.backend_repeats)
        wall, cpu = ({b: statistics.median(t[b]) for b in backends} for t in (timer.wall, timer.cpu_s))
        for b in backends:
            rows.append({"cell": cell, "backend": b, "step_ms": 1e3 * wall[b], "step_ms_min": 1e3 * min(timer.wall[b]),
                         "cpu_step_ms": 1e3 * cpu[b], "epoch_s": wall[b] * math.ceil(EPOCH / a.batch_size),
                         "ratio": wall[b] / wall["native"], "cpu_ratio": cpu[b] / cpu["native"], "seq_len": 28,
                         "warmup_s": sum(warmup.wall[b]), **pick(a, "hidden_size", "batch_size", "threads")})
            target = 1.3 if b == "explicit+compile" and cell == "lstm" else None
            checks += [{"name": f"backends: {b} / native, {cell.upper()}-{a.hidden_size} ({a.device.upper()})",
                        "value": rows[-1]["ratio"], "target": target, "owner": target and "explicit-cells issue",
                        "detail": f"{1e3 * wall[b]:.1f} ms/step; CPU-time ratio {rows[-1]['cpu_ratio']:.2f}; warm-up "
                                  f"(3 steps, with the compile) {rows[-1]['warmup_s']:.1f} s"}] if b != "native" else []
    return {"setup": pick(a, "device", note="steps of the variants interleaved; medians"), "rows": rows,
            "checks": checks}


def bptt_row(a, strategy: str) -> dict:
    """In a fresh process, the real module (bptt=full|truncated, k1 = k2 = k) in a bare Trainer on random
    pixel batches: the first batch's peak memory growth, then the mean time of the next `bptt_steps`."""
    import pytorch_lightning as pl

    cfg = compose_run_config([f"cell={a.cell}", f"model.hidden_size={a.hidden_size}", f"bptt={strategy}",
                              *([f"bptt.k1={a.k}"] if strategy == "truncated" else [])], "/tmp")
    build.configure_torch(cfg)
    pl.seed_everything(0, verbose=False)
    module, n = build.build_module(cfg, TaskSpec("classify_last", 1, 10, a.seq_len)), a.batch_size * (a.bptt_steps + 1)
    data = InMemorySequences(torch.rand(n, a.seq_len, 1), torch.randint(0, 10, (n,)))
    timer, memory = harness.StepTimer(a.device), []

    class Probe(pl.Callback):  # batch 0: peak memory; the others: time
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            memory.append(harness.memory_mark(a.device)) if batch_idx == 0 else timer.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            memory.append(harness.memory_growth_mb(a.device, memory[0])) if batch_idx == 0 else timer.lap("s")

    trainer = pl.Trainer(accelerator="gpu" if a.device == "cuda" else "cpu", devices=1, max_epochs=1,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Probe()])
    trainer.fit(module, train_dataloaders=batch_loader(data, a.batch_size, shuffle=False))
    step_s = statistics.fmean(timer.wall["s"])
    return {"strategy": strategy, "step_s": step_s, "epoch_s": step_s * math.ceil(EPOCH / a.batch_size),
            "optimizer_steps_per_batch": trainer.global_step / (a.bptt_steps + 1), "peak_growth_mb": memory[1]}


def run_bptt(a) -> dict:
    rows = [harness.in_child("bptt_row", a, strategy=s) for s in ("full", "truncated")]
    time_ratio, memory_ratio = (rows[1][key] / rows[0][key] for key in ("step_s", "peak_growth_mb"))
    checks = [{"name": f"BPTT: truncated (k={a.k}) / full peak memory growth, T={a.seq_len}", "value": memory_ratio,
               "target": 0.25, "owner": "truncation issue", "detail": f"{rows[1]['peak_growth_mb']:.0f} vs "
               f"{rows[0]['peak_growth_mb']:.0f} MB; step time ratio {time_ratio:.2f}"}]
    setup = pick(a, "seq_len", "hidden_size", "batch_size", "k", "cell", "threads", "device", steps=a.bptt_steps)
    return {"setup": setup, "rows": rows, "time_ratio": time_ratio, "memory_ratio": memory_ratio, "checks": checks}


def denormal_row(a, flush: bool) -> dict:
    """In a fresh process (set before torch's first parallel op, the flag reaches every intra-op
    thread): `denormal_repeats` steps on pixel sequences, each of a fresh model from the same seed."""
    timer, flush_override = harness.StepTimer(), (f"flush_denormal={flush}",)
    timer.step("warm-up", training_step(a, a.cell, "native", 28, a.hidden_size, a.batch_size, 1, flush_override))
    for _ in range(a.denormal_repeats):  # the warm-up loaded the kernels
        timer.step("s", training_step(a, a.cell, "native", a.seq_len, a.hidden_size, a.batch_size, 1, flush_override))
    return {"setting": f"denormals {'flushed' if flush else 'kept'}", "flush_denormal": flush,
            "step_s": statistics.median(timer.wall["s"]), "all_s": timer.wall["s"]}


def run_denormals(a) -> dict:
    rows = [harness.in_child("denormal_row", a, flush=flush) for flush in (False, True)]
    kept, flushed = (row["step_s"] for row in rows)
    checks = [{"name": f"denormals: flushed / kept step time, {a.cell.upper()}-{a.hidden_size}, T={a.seq_len} (CPU)",
               "value": flushed / kept, "target": None,
               "detail": f"{flushed:.2f} vs {kept:.2f} s per training step; flush_denormal: true is the default"}]
    setup = pick(a, "seq_len", "hidden_size", "batch_size", "cell", "threads", repeats=a.denormal_repeats, device="cpu")
    return {"setup": setup, "rows": rows, "checks": checks}


def run_startup(a, timeout: float = 300.0) -> dict:
    """Fresh `rnnexp-train` processes: --cfg job, --help, and a one-step run timed to the end of its
    first step and to its probe's creation (imports, data decoding, model: before the Trainer)."""
    times = {k: [] for k in ("--cfg job", "--help", "first step", "before the Trainer", "one-step run, whole process")}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-startup-") as scratch:
        base, where = harness.TRAIN, f"paths.output_root={scratch}/outputs"
        for r in range(a.startup_repeats):
            for what in ("--cfg job", "--help"):
                times[what].append(harness.run_process([*base, *what.split(), where], scratch, timeout)[0])
            run = [*base, *run_overrides(a), "trainer.max_epochs=-1", "trainer.max_steps=1", where,
                   f"hydra.run.dir={scratch}/run{r}", PROBE]
            started = time.time()  # the probe's times are time.time() too: comparable across processes
            times["one-step run, whole process"].append(harness.run_process(run, scratch, timeout)[0])
            facts = json.loads(Path(f"{scratch}/run{r}/bench_probe.json").read_text())
            times["first step"].append(facts["first_step_end"] - started)
            times["before the Trainer"].append(facts["created"] - started)
    rows = [{"what": k, "median_s": statistics.median(v), "min_s": min(v), "all_s": v} for k, v in times.items()]
    checks = [{"name": f"start-up: rnnexp-train {r['what']} (s)", "value": r["median_s"], "target": 1.5,
               "detail": f"min {r['min_s']:.2f} s of {a.startup_repeats}"} for r in rows[:2]]
    return {"setup": pick(a, "dataset", "source", "threads", repeats=a.startup_repeats,
                          command=" ".join(harness.TRAIN)), "rows": rows, "checks": checks}


def run_sweep(a, timeout: float = 1800.0) -> dict:
    """`rnnexp-train -m seed=1,2` per mode, start to exit, modes in turns: sequential (basic launcher,
    torch's default threads), the same with OMP_NUM_THREADS=1 (the jobs as joblib runs them, in turn),
    joblib (a worker per core, cores // n_jobs threads each). A probe records each job's facts."""
    modes = [m.replace("_1_", ", 1 ") for m in ("sequential", "sequential_1_thread", "joblib") if m in a.sweep_modes]
    if "sequential" not in modes or "joblib" not in modes:
        raise ValueError(f"--sweep-modes {','.join(a.sweep_modes)}: the ratio needs sequential and joblib")
    walls, jobs = {mode: [] for mode in modes}, {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="rnnexp-bench-sweep-") as scratch:
        for r in range(a.sweep_repeats):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                where = Path(scratch) / f"r{r}" / mode.replace(", ", "_").replace(" ", "_")
                command = [*harness.TRAIN, "-m", *(["hydra/launcher=joblib"] if mode == "joblib" else []),
                           "seed=1,2", *run_overrides(a, threads=False), "trainer.max_epochs=-1",
                           f"trainer.max_steps={a.sweep_steps}", f"paths.output_root={scratch}/outputs", PROBE,
                           f"hydra.sweep.dir={where}", "hydra.sweep.subdir=job${hydra.job.num}"]  # short paths
                walls[mode].append(harness.run_process(command, scratch, timeout, threads=int("1 thread" in mode))[0])
                jobs[mode] += [[json.loads(p.read_text()) for p in sorted(where.rglob("bench_probe.json"))]]
                records = [json.loads(p.read_text()) for p in sorted(where.rglob("metrics.json"))]
                if len(jobs[mode][-1]) != 2 or [r.get("status") for r in records] != ["completed"] * 2:
                    raise RuntimeError(f"the {mode} sweep did not complete two jobs (records: {records})")
    rows = [{"mode": m, "wall_s": statistics.median(walls[m]), "jobs_per_hour": 2 * 3600 / statistics.median(walls[m]),
             "train_s_per_job": statistics.median(j["train_end"] - j["train_start"] for run in jobs[m] for j in run),
             "threads_per_job": sorted({j["threads"] for run in jobs[m] for j in run}),
             "processes": len({j["pid"] for j in jobs[m][0]}), "all_wall_s": walls[m]} for m in modes]
    by = {row["mode"]: row for row in rows}
    joblib, sequential, single = by["joblib"], by["sequential"], by.get("sequential, 1 thread")
    # a job trains this much faster alone on all the cores than beside the other on its share
    speedup = joblib["train_s_per_job"] / sequential["train_s_per_job"]
    checks = [{"name": "sweep: joblib / the same 2 jobs in sequence (1 thread each, as joblib runs them)",
               "value": single["wall_s"] / joblib["wall_s"], "target": 1.6, "higher_is_better": True,
               "detail": f"{joblib['wall_s']:.1f} s vs {single['wall_s']:.1f} s"}] if single else []
    checks.append({"name": "sweep: joblib / basic launcher, torch's default threads per job",
                   "value": sequential["wall_s"] / joblib["wall_s"], "target": None, "higher_is_better": True,
                   "detail": f"{joblib['wall_s']:.1f} s vs {sequential['wall_s']:.1f} s; threads per job "
                             f"{joblib['threads_per_job']} vs {sequential['threads_per_job']}; a job trains "
                             f"{speedup:.2f}x faster alone on all cores, so at most {2 / speedup:.2f} is possible"})
    return {"setup": pick(a, "cell", "hidden_size", "dataset", "source", "device", steps=a.sweep_steps,
                          repeats=a.sweep_repeats, cores=os.cpu_count()), "rows": rows, "checks": checks}


def scaling_points(seq_lens=(28, 112, 784), hidden_sizes=(64, 128, 256, 512), batch_sizes=(32, 128, 512),
                   base=None) -> list[dict]:
    """One axis at a time from `base` (BASE); the base point appears once, under the first axis."""
    base, points = {**BASE, **(base or {})}, []
    for axis, values in (("seq_len", seq_lens), ("hidden_size", hidden_sizes), ("batch_size", batch_sizes)):
        points += [{"axis": axis, **base, axis: v} for v in values
                   if all({**base, axis: v} != {k: p[k] for k in BASE} for p in points)]
    return points


def scaling_rows(a, kind: str) -> list[dict]:
    """Per cell, backend and point: "time", the mean of at least `scaling_steps` steps (more, up to 20,
    while under half a second), per 60k-sample epoch; or "memory", a fresh model's first step's peak
    growth, smallest first, in a process whose glibc returns freed blocks at once (no reuse)."""
    base = {**BASE, "hidden_size": a.hidden_size, "batch_size": a.batch_size}
    runs = [(cell, backend, point) for cell in a.scaling_cells for backend in a.scaling_backends
            for point in scaling_points(a.scaling_seq_lens, a.scaling_hidden_sizes, a.scaling_batch_sizes, base)]
    for cell in a.scaling_cells:
        for backend in a.scaling_backends:  # a throwaway step: a kernel's first call loads it and the thread pools
            training_step(a, cell, backend, 28, a.hidden_size, 8)()
    rows = [{}] * len(runs)
    for i in sorted(range(len(runs)), key=lambda i: math.prod(runs[i][2][k] for k in BASE) if kind == "memory" else i):
        (cell, backend, point), timer = runs[i], harness.StepTimer(a.device)
        step = training_step(a, cell, backend, *(point[k] for k in BASE))
        if kind == "memory":
            before = harness.memory_mark(a.device)
            step()
            rows[i] = {"peak_growth_mb": harness.memory_growth_mb(a.device, before)}
            continue
        while len(timer.wall["s"]) < a.scaling_steps or (sum(timer.wall["s"]) < 0.5 and len(timer.wall["s"]) < 20):
            timer.step("s", step)
        step_s = statistics.fmean(timer.wall["s"])
        rows[i] = {"cell": cell, "backend": backend, **point, "step_ms": 1e3 * step_s,
                   "epoch_s": step_s * math.ceil(EPOCH / point["batch_size"]), "timed_steps": len(timer.wall["s"])}
    return rows


def run_scaling(a) -> dict:
    """Times in this process (its allocator as every run has it), memory in a process of its own."""
    memory = harness.in_child("scaling_rows", a, kind="memory",
                              env={"MALLOC_MMAP_THRESHOLD_": "4096", "MALLOC_TRIM_THRESHOLD_": "0"})
    rows = [{**row, **mb} for row, mb in zip(scaling_rows(a, "time"), memory)]
    setup = pick(a, "threads", "device", "precision", cells=a.scaling_cells, backends=a.scaling_backends,
                 steps=a.scaling_steps, base={**BASE, "hidden_size": a.hidden_size, "batch_size": a.batch_size})
    ms = {r["backend"]: r["step_ms"] for r in rows if r["cell"] == "lstm" and all(r[k] == v for k, v in BASE.items())}
    checks = [{**GPU_CHECK, "value": ms["explicit+compile"] / ms["native"],
               "detail": f"{ms['native']:.2f} vs {ms['explicit+compile']:.2f} ms/step, {a.precision}"}
              ] if a.device == "cuda" and {"native", "explicit+compile"} <= set(ms) else []
    Path(a.out_dir).mkdir(parents=True, exist_ok=True)
    result = {"setup": setup, "rows": rows, "plot": plot_scaling(rows, f"{a.out_dir}/scaling.png", setup),
              "checks": checks}
    Path(a.out_dir, "scaling.json").write_text(json.dumps(result, indent=1))
    return result


def plot_scaling(rows: list[dict], path: str, setup: dict) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7), dpi=100, layout="constrained")
    grid = fig.subplots(2, 3)
    for col, (axis, label) in enumerate((("seq_len", "sequence length T"), ("hidden_size", "hidden size"),
                                         ("batch_size", "batch size"))):
        for cell, backend in sorted({(r["cell"], r["backend"]) for r in rows}):
            points = sorted((r for r in rows if (r["cell"], r["backend"]) == (cell, backend) and
                             all(r[k] == setup["base"][k] for k in BASE if k != axis)), key=lambda r: r[axis])
            for row, key in ((0, "epoch_s"), (1, "peak_growth_mb")):
                grid[row, col].plot([p[axis] for p in points], [p[key] for p in points], marker="o",
                                    linestyle="-" if backend == "native" else "--", label=f"{cell} {backend}")
        for ax, ylabel in zip(grid[:, col], ("s / epoch (60k, extrapolated)", "peak memory growth, MB")):
            ax.set(yscale="log", xlabel=label, ylabel=ylabel)
            ax.set_xscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
    grid[0, 0].legend(fontsize=8)
    fig.suptitle(f"training step scaling from {setup['base']}; {setup['device']}, {setup['threads']} threads, "
                 f"{setup['precision']}; time from {setup['steps']} steps")
    fig.savefig(path)
    return path
