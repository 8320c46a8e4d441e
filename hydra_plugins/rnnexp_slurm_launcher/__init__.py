"""rnnexp's SLURM launcher: submitit's, with a size check before submitting and a stop for array
tasks that can never start (slurm_launcher.py; conf/hydra/launcher/submitit_slurm.yaml)."""
