"""The pieces of state a resumed run needs, each on its own: the run's clock across segments, the
data shard and position of each DDP process, every random-number stream, the permutation of
`data.order=permuted`, and the Lightning version whose resume behaviour the code relies on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import tomllib
import torch

from rnnexp.callbacks.resume import ExactResume, restore_rng_streams
from rnnexp.data.loaders import EpochBatchSampler
from rnnexp.training import train

REPO = Path(__file__).resolve().parents[1]


def test_fit_and_wall_time_add_up_over_the_segments_of_a_resumed_run(make_cfg):
    cfg = make_cfg(["trainer.max_epochs=1"])
    first = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    # Pretend the first segment took 1000 s more and was killed right after its last checkpoint:
    # a resume must add its own time to what the checkpoint says, not start from zero.
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    clock = checkpoint["callbacks"]["ExactResume"]
    clock["fit_time_s"] += 1000.0
    clock["wall_time_s"] += 2000.0
    torch.save(checkpoint, last)
    record = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**record, "status": "running"}))

    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.trainer.max_epochs = 2  # one more epoch to train after the resume
    second = train(cfg)
    assert second["status"] == "completed" and second["global_step"] == 2 * first["global_step"]
    assert second["fit_time_s"] > 1000.0 + first["fit_time_s"] * 0.5
    assert second["wall_time_s"] > 2000.0 + first["fit_time_s"] * 0.5
    assert second["optimizer_steps_per_epoch"] == [first["global_step"]] * 2


def test_each_process_takes_its_share_and_a_resumed_process_skips_only_its_own_batches():
    def share(rank, skip=0, epoch=3):
        sampler = EpochBatchSampler(1000, 64, shuffle=True, seed=7, num_replicas=2, rank=rank)
        sampler.set_epoch(epoch)
        sampler.skip_batches = skip
        return [b.tolist() for b in sampler], len(sampler)

    alone = EpochBatchSampler(1000, 64, shuffle=True, seed=7)
    alone.set_epoch(3)
    everything = [b.tolist() for b in alone]  # 16 batches
    (rank0, n0), (rank1, n1) = share(0), share(1)
    assert n0 == n1 == len(rank0) == len(rank1) == 8  # equal steps: the all-reduce needs every process
    assert rank0 == everything[0::2] and rank1 == everything[1::2]
    # resumed after 3 of its batches, each process continues with its own 4th
    assert share(0, skip=3)[0] == rank0[3:] and share(1, skip=3)[0] == rank1[3:]
    assert share(1, skip=3)[0] != rank1  # (the old DistributedSamplerWrapper retrained them)
    # an odd number of batches: the shorter share wraps around so both make the same steps
    odd = EpochBatchSampler(1000 - 64, 64, shuffle=True, seed=7, num_replicas=2, rank=1)
    assert len(list(odd)) == len(odd) == 8
    # evaluation is not padded: every sample is scored exactly once across the processes, and a
    # set of one batch still gives every process some
    for size, batch_size in ((1000, 300), (500, 500), (3, 500)):
        evaluation = [EpochBatchSampler(size, batch_size, shuffle=False, num_replicas=2, rank=r, pad=False) for r in (0, 1)]
        assert all(len(list(sampler)) == len(sampler) >= 1 for sampler in evaluation)
        scored = sorted(i for sampler in evaluation for batch in sampler for i in batch.tolist())
        assert scored == list(range(size))


def test_every_random_number_stream_is_restored_from_a_checkpoint_file(tmp_path):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    path = tmp_path / "state.ckpt"
    torch.save({"callbacks": {"ExactResume": ExactResume().state_dict()}}, path)
    first = (torch.rand(3).tolist(), random.random(), np.random.rand())
    # loaded the way Lightning loads a resumed checkpoint here: plain data and tensors only
    saved = torch.load(path, weights_only=True)["callbacks"]["ExactResume"]["rng"]
    assert set(saved) == {"torch", "cuda", "python", "numpy"}  # cuda: [] where CUDA is not initialised
    restore_rng_streams(saved)
    assert (torch.rand(3).tolist(), random.random(), np.random.rand()) == first


def test_a_permuted_run_is_evaluated_under_its_own_permutation(make_cfg):
    from rnnexp.evaluate import evaluate

    record = train(make_cfg(["data.order=permuted", "model.hidden_size=8", "trainer.limit_train_batches=2",
                             "data.eval_batch_size=200"]))
    assert record["status"] == "completed"
    as_trained = evaluate(record["best"]["checkpoint"], [])
    # the checkpoint's permutation wins over one drawn again from another seed
    redrawn = evaluate(record["best"]["checkpoint"], ["data.permutation_seed=5"])
    assert redrawn == as_trained  # test/acc and test/loss, to the last bit


def test_a_data_module_takes_the_permutation_from_its_saved_state():
    from rnnexp.data.images import SequenceImageDataModule, pixel_permutation

    other = SequenceImageDataModule(source="bundled", order="permuted", permutation_seed=1).prepare()
    module = SequenceImageDataModule(source="bundled", order="permuted", permutation_seed=0).prepare()
    assert not torch.equal(module.splits[2].inputs, other.splits[2].inputs)
    module.load_state_dict(other.state_dict())
    assert torch.equal(module.permutation, pixel_permutation(1))
    assert torch.equal(module.splits[2].inputs, other.splits[2].inputs)  # the splits were rebuilt


def test_the_declared_lightning_floor_has_what_resume_relies_on():
    # Trainer.fit(weights_only=...) exists from 2.6.0; DistributedSamplerWrapper forwards
    # set_epoch from 2.6.1 (before it, every DDP epoch reused epoch 0's batches)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lightning = next(d for d in dependencies if d.startswith("pytorch-lightning"))
    floor = lightning.split(">=")[1].split(",")[0]
    assert tuple(int(p) for p in floor.split(".")) >= (2, 6, 1), lightning
    import inspect

    import pytorch_lightning as pl

    assert "weights_only" in inspect.signature(pl.Trainer.fit).parameters
