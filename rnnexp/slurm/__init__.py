"""rnnexp on a SLURM cluster: what the cluster offers (`cluster`: read before and while the launcher
of hydra_plugins/rnnexp_slurm_launcher submits a sweep) and the Lightning cluster environment of a
job (`environment`).

Who owns which signal (docs/slurm.md):
  - USR2, `hydra.launcher.signal_delay_s` before the time limit (sbatch --signal), or sent by
    `scancel --signal=USR2`: submitit. Its handler requeues the array task (`scontrol requeue`;
    after a time-out only `hydra.launcher.max_num_timeout` times) and exits at once. The requeued
    task runs the same Hydra job again, which resumes from its run directory's last.ckpt.
  - SIGTERM (SLURM pre-emption in REQUEUE mode, `scontrol requeue`, `scancel`, the time limit
    itself): submitit logs and ignores it; Lightning notices it and stops training at the end of
    the batch, where rnnexp's LastCheckpoint writes last.ckpt first. SLURM requeues the task
    (pre-emption, requeue) or ends it (scancel, time limit).
  - SIGUSR1: nobody. Lightning's SLURMEnvironment takes ranks from SLURM but its auto-requeue
    (SIGUSR1: hpc_ckpt_*.ckpt and a second `scontrol requeue`) is off (`environment.trainer_plugins`).
"""
