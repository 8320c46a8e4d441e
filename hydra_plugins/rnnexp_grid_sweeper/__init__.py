"""rnnexp's grid sweeper: Hydra's basic sweep (a cartesian product of the command line's lists),
with each job's folder named by only the keys the sweep varies (rnnexp.sweep_naming)."""
