"""When last.ckpt is written and the step line printed, on the boundaries: several optimizer steps
per batch (truncated BPTT on a per-step task), the first and last batch of an epoch, and the
decisions every process of a distributed run must share."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl

from rnnexp.callbacks.cadence import crossed_multiple
from rnnexp.callbacks.checkpointing import LastCheckpoint
from rnnexp.callbacks.resume import ExactResume


@pytest.mark.parametrize("every,per_batch", [(6, 4), (6, 1), (4, 4), (5, 3), (1, 4), (7, 2)])
def test_every_multiple_of_n_is_due_exactly_once_whatever_the_steps_per_batch(every, per_batch):
    due_at = [after for before, after in ((b * per_batch, (b + 1) * per_batch) for b in range(60))
              if crossed_multiple(before, after, every)]
    multiples = list(range(every, 60 * per_batch + 1, every))
    # one batch per multiple, the batch that reaches it (a batch can reach two when N < steps per batch)
    assert len(due_at) == len({-(-m // per_batch) for m in multiples})
    assert all(any(a - per_batch < m <= a for a in due_at) for m in multiples)
    assert not crossed_multiple(0, 10, 0)  # N = 0: never


class _Strategy:
    """What the callbacks ask of Lightning's strategy; broadcast hands out rank 0's value."""

    def __init__(self, rank0_value=None):
        self.rank0_value = rank0_value

    def broadcast(self, value):
        return value if self.rank0_value is None else self.rank0_value

    def reduce_boolean_decision(self, decision, all=True):
        return self.rank0_value if self.rank0_value is not None else decision


class _Trainer:
    """The part of a Trainer LastCheckpoint uses, counting the checkpoints it is asked to write."""

    world_size, global_rank, global_step, current_epoch, num_training_batches = 1, 0, 0, 0, 1000
    loggers = ()
    enable_validation, check_val_every_n_epoch, val_check_batch = False, 1, None
    received_sigterm = False

    def __init__(self, strategy=None):
        self.saved = []
        self.strategy = strategy or _Strategy()

    def save_checkpoint(self, path, weights_only=False):
        self.saved.append(self.global_step)


def _run(callback, batches=6, per_batch=1, trainer=None):
    trainer = trainer or _Trainer()
    callback.on_train_start(trainer, None)  # the initial weights
    for batch in range(batches):
        callback.on_train_batch_start(trainer, None, None, batch)
        trainer.global_step += per_batch
        callback.on_train_batch_end(trainer, None, None, None, batch)
    callback.on_exception(trainer, None, None)  # gives Ctrl-C back
    return trainer.saved


def test_last_checkpoint_is_written_by_time_by_default_and_by_steps_when_asked(tmp_path):
    assert _run(LastCheckpoint(tmp_path / "a", every_n_seconds=3600)) == [0]  # an hour has not passed
    assert _run(LastCheckpoint(tmp_path / "b", every_n_seconds=1e-9)) == [0, 1, 2, 3, 4, 5, 6]
    assert _run(LastCheckpoint(tmp_path / "c", every_n_train_steps=2, every_n_seconds=3600)) == [0, 2, 4, 6]
    assert _run(LastCheckpoint(tmp_path / "d", every_n_train_steps=0, every_n_seconds=0)) == [0]


def test_last_checkpoint_every_6_steps_with_4_steps_a_batch_misses_no_multiple(tmp_path):
    saved = _run(LastCheckpoint(tmp_path, every_n_train_steps=6, every_n_seconds=0), batches=9, per_batch=4)
    assert saved == [0, 8, 12, 20, 24, 32, 36]  # the batches that reach 6, 12, 18, 24, 30, 36


def test_no_mid_epoch_checkpoint_after_the_epochs_last_batch(tmp_path):
    # the last batch is followed by validation, then the epoch-end save: a save here would
    # restart after the batch but before validation
    trainer = _Trainer()
    trainer.num_training_batches = 4
    saved = _run(LastCheckpoint(tmp_path, every_n_train_steps=1, every_n_seconds=0), batches=4, trainer=trainer)
    assert saved == [0, 1, 2, 3]


def test_a_save_due_after_a_batch_that_validation_follows_waits_for_the_next_batch(tmp_path):
    # trainer.val_check_interval=0.5: validation after batches 2 and 4 of 4; Lightning would
    # restart a checkpoint written before that validation past it, skipping it
    trainer = _Trainer()
    trainer.num_training_batches, trainer.enable_validation, trainer.val_check_batch = 4, True, 2
    saved = _run(LastCheckpoint(tmp_path, every_n_train_steps=1, every_n_seconds=0), batches=4, trainer=trainer)
    assert saved == [0, 1, 3]  # (4: the epoch-end save, after validation)


def test_whether_last_ckpt_exists_is_rank_zeros_decision(tmp_path):
    # this process sees a stale last.ckpt (node-local directory), rank 0 sees none: both must save
    # the initial weights together, or the save's barrier waits for ever
    (tmp_path / "last.ckpt").write_bytes(b"stale")
    trainer = _Trainer(_Strategy(rank0_value=False))
    trainer.world_size, trainer.global_rank = 2, 1
    callback = LastCheckpoint(tmp_path, every_n_seconds=0)
    callback.on_train_start(trainer, None)
    callback.on_exception(trainer, None, None)  # gives Ctrl-C back
    assert trainer.saved == [0]
    # ... and the other way round: rank 0 has it, this process does not: neither saves
    trainer = _Trainer(_Strategy(rank0_value=True))
    trainer.world_size, trainer.global_rank = 2, 1
    callback = LastCheckpoint(tmp_path / "elsewhere", every_n_seconds=0)
    callback.on_train_start(trainer, None)
    callback.on_exception(trainer, None, None)  # gives Ctrl-C back
    assert trainer.saved == []


def test_processes_that_disagree_on_resuming_stop_with_an_error_instead_of_hanging():
    trainer = _Trainer(_Strategy())
    trainer.world_size, trainer.global_rank = 2, 1

    class Disagreeing(_Strategy):
        def reduce_boolean_decision(self, decision, all=True):
            return not all  # some process resumed, not every one

    trainer.strategy = Disagreeing()
    with pytest.raises(RuntimeError, match="must see the same run directory"):
        ExactResume().setup(trainer, None, "fit")
    trainer.strategy = _Strategy()
    ExactResume().setup(trainer, None, "fit")  # all agree: nothing to say


def test_step_printer_and_last_ckpt_fire_on_every_multiple_under_truncated_bptt(make_cfg, capsys):
    from rnnexp.build import build_callbacks, build_datamodule, build_module, build_trainer

    # copy memory T = 10: 30 steps, k1 = 8 -> 4 optimizer steps a batch; 4 batches = 16 steps
    cfg = make_cfg(["data=copy_memory", "data.seq_len=10", "data.limit_train_samples=256", "model.hidden_size=8",
                    "bptt=truncated", "bptt.k1=8", "bptt.k2=8", "callbacks.step_printer.every_n_steps=6",
                    "callbacks.periodic_checkpoint.every_n_train_steps=6",
                    "callbacks.periodic_checkpoint.every_n_seconds=0", "trainer.max_epochs=2", "debug=fast",
                    "threads=1", "data.batch_size=64", "trainer.limit_val_batches=1"], shrink=False)
    saved = []

    class SaveRecorder(pl.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saved.append(trainer.global_step)

    datamodule = build_datamodule(cfg).prepare()
    module = build_module(cfg, datamodule.task)
    callbacks = [*(cb for cb in build_callbacks(cfg) if not isinstance(cb, pl.callbacks.LearningRateMonitor)),
                 SaveRecorder()]
    trainer = build_trainer(cfg, callbacks, [], manual_optimization=True)
    trainer.fit(module, datamodule=datamodule)
    printed = [int(line.split(",")[0].split()[1]) for line in capsys.readouterr().out.splitlines()
               if line.startswith("Step ")]
    assert trainer.global_step == 32
    assert printed == [8, 12, 20, 24, 32]  # the batches that reach 6, 12, 18, 24, 30
    assert saved.count(16) >= 1  # the end of epoch 0 (and the best checkpoint)
    # initial, 8, 12, (16: epoch end), 20, 24, (32: epoch end and training end); 28 reaches no multiple
    assert sorted(set(saved)) == [0, 8, 12, 16, 20, 24, 32] and 28 not in saved
