"""The folder a sweep gives each job, and how a job learns which keys its sweep varies.

A job is named by the keys its sweep varies and nothing else: `cell=gru,model.bidirectional=true`,
not every override of the command line (those stay in `.hydra/overrides.yaml` and the run record).
The folder name is also the run's name in TensorBoard and `rnnexp-compare`, so the part that tells
runs apart comes first and is not cut off. Names depend only on the job's overrides and the
sweep's varying keys, so rerunning the same command with `hydra.sweep.dir=<dir>` finds each job's
folder again (sweep resume).

Every sweeper of rnnexp (the grid sweeper in hydra_plugins/rnnexp_grid_sweeper, the Optuna one)
adds `job_hydra_overrides(job, varying_keys)` to each job's overrides. This module imports neither
torch nor Hydra: it works on override strings.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence

# TensorBoard and file systems cope with far more (255 bytes), but a name this long is no longer
# read at a glance; longer ones keep their first characters and end in a hash of the whole.
MAX_NAME_LENGTH = 120
HASH_LENGTH = 10
# The job's environment variable (set through hydra.job.env_set) listing its sweep's varying keys,
# comma-separated, in command-line order; rnnexp.hparams makes them TensorBoard's first columns.
VARYING_KEYS_ENV = "RNNEXP_SWEEP_KEYS"
# A job of a multirun whose command line sweeps nothing and overrides nothing.
NAME_WITHOUT_OVERRIDES = "job"

# Kept as they are in a folder name; anything else ('/', spaces, quotes, brackets, '$', ':') would
# make subfolders, need quoting, or read as Hydra syntax when the name is passed as an override.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+@-]+")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@/-]*$")


# overrides that say where a run goes, not what it is: never a column of rnnexp-compare, never part of
# a seed group's name. `trial.*` (storage, study name, number) tells a search's job which trial it
# is; rnnexp-compare shows the trial's number and state in columns of their own.
INFRA_PREFIXES = ("paths.", "hydra.", "hydra/", "trial.")


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """{key: value} of override lines as Hydra records them, less the INFRA_PREFIXES keys; a boolean is
    spelled lower case (a swept `true,false` comes back from Hydra as True / False)."""
    return {override_key(o): _value(o) for o in map(str, overrides)
            if "=" in o and not override_key(o).startswith(INFRA_PREFIXES)}


def override_key(override: str) -> str:
    """`cell=gru` -> `cell`; `+experiment=x` -> `experiment`; `hydra/launcher=joblib` -> `hydra/launcher`."""
    return override.split("=", 1)[0].lstrip("+~")


def _value(override: str) -> str:
    value = override.split("=", 1)[1] if "=" in override else ""
    # Hydra reads an unquoted true/True/TRUE as the same bool, and its sweeps print True: the name
    # says it as the command line and the YAML do
    return value.lower() if value.lower() in ("true", "false") else value


def job_dir_name(overrides: Sequence[str], varying_keys: Sequence[str], exclude_keys: Sequence[str] = ()) -> str:
    """The folder of one job: `key=value` for each varying key, in `varying_keys` order, joined by ','.

    `overrides` are the job's own (one value per key, as the sweeper launches it). With no varying
    key (a multirun that sweeps nothing) the name is all of its overrides but `exclude_keys` (where
    the outputs go, say: hydra.job.config.override_dirname.exclude_keys), or "job" when none is left.
    A name with characters outside [A-Za-z0-9_.=,+@-], or longer than MAX_NAME_LENGTH, has them
    replaced by '_' (and is cut) and ends in '-' + a hash of the exact overrides, so two jobs with
    different values never share a folder.
    """
    by_key = {override_key(o): o for o in overrides}
    missing = [k for k in varying_keys if k not in by_key]
    if missing:
        raise ValueError(f"varying key(s) {missing} are not among the job's overrides {list(overrides)}")
    keys = list(varying_keys) if varying_keys else [k for k in by_key if k not in exclude_keys]
    if not keys:
        return NAME_WITHOUT_OVERRIDES
    exact = ",".join(f"{k}={_value(by_key[k])}" for k in keys)
    safe = _UNSAFE.sub("_", exact)
    if safe == exact and len(exact) <= MAX_NAME_LENGTH:
        return exact
    digest = hashlib.sha1(exact.encode("utf-8")).hexdigest()[:HASH_LENGTH]
    return f"{safe[:MAX_NAME_LENGTH - HASH_LENGTH - 1]}-{digest}"


def job_hydra_overrides(overrides: Sequence[str], varying_keys: Sequence[str], name_folder: bool = True,
                        exclude_keys: Sequence[str] = ()) -> list[str]:
    """Hydra overrides a sweeper appends to a job's own: its folder (`hydra.sweep.subdir`, unless
    `name_folder` is False, e.g. because the user set hydra.sweep.subdir) and, when the sweep varies
    any key, the variable VARYING_KEYS_ENV the job reads them from (`hydra.job.env_set`).

    Hydra overrides are kept out of the job's task overrides (`.hydra/overrides.yaml`, the record)
    and out of the launcher's log line; conf/hydra/default.yaml declares the variable (empty), so
    setting it needs no `++`.
    """
    for key in varying_keys:
        if not _KEY.match(key):
            raise ValueError(f"cannot name sweep jobs by the key {key!r}: expected a config key or group "
                             "such as model.hidden_size or hydra/launcher")
    extra = []
    if name_folder:
        # quoted: the name holds ',' and '=', which unquoted would read as a sweep of values
        extra.append(f"hydra.sweep.subdir='{job_dir_name(overrides, varying_keys, exclude_keys)}'")
    if varying_keys:
        extra.append(f"hydra.job.env_set.{VARYING_KEYS_ENV}='{','.join(varying_keys)}'")
    return extra


def varying_keys_of_job(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The keys the current job's sweep varies (what job_hydra_overrides passed); [] outside a sweep."""
    return [key for key in environ.get(VARYING_KEYS_ENV, "").split(",") if key]
