"""The Lightning cluster environment of a run: `trainer.plugins` in conf/trainer/cpu.yaml.

Inside a SLURM job step (the srun tasks of a `hydra/launcher=submitit_slurm` job) Lightning must take
the ranks from SLURM (SLURM_PROCID, SLURM_NTASKS, ...) instead of starting processes itself: that is
Lightning's SLURMEnvironment. It is given explicitly with `auto_requeue=False`, because submitit
owns the pre-emption and time-out signals (rnnexp.slurm's docstring): Lightning's auto-requeue
would answer SIGUSR1 with hpc_ckpt_*.ckpt files and a second `scontrol requeue`.
Anywhere else: no plugin, Lightning detects its environment (local, torchrun, ...) as usual.
"""

from __future__ import annotations


def trainer_plugins() -> list:
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
