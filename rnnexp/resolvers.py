"""OmegaConf resolvers the configs use. Imported by the entry points before Hydra composes.

Only omegaconf is imported here: the command line must parse without loading torch.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

_claimed: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """Claim `path`, or `path_1`, `path_2`, ... : the first that did not exist, created atomically.

    Two runs started in the same second (same name) therefore never share a run directory.
    Memoised per process because Hydra may resolve `hydra.run.dir` more than once.
    """
    if path in _claimed:
        return _claimed[path]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    candidate, n = path, 0
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
            candidate = f"{path}_{n}"
    _claimed[path] = candidate
    return candidate


def claimed_dirs() -> set[str]:
    """Run directories this process created (and may remove again if the run never started)."""
    return set(_claimed.values())


def register() -> None:
    if not OmegaConf.has_resolver("unique_dir"):
        # use_cache: Hydra copies the master config's resolver cache into every job's config
        # (OmegaConf.copy_cache), so all jobs of a sweep, in whatever process, see the same folder.
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)


register()
