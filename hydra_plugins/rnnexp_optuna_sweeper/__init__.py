"""rnnexp's Hydra sweeper for `hparams_search=optuna`: Optuna's ask-and-tell, with pruning, stale
trials failed or retried, and a study shared by many workers (conf/hparams_search/optuna.yaml,
docs/sweeps.md)."""
