"""Loading checkpoints safely: `weights_only=True` everywhere, so a crafted checkpoint carrying a
pickled payload is refused instead of executed."""

from __future__ import annotations

import pickle
from pathlib import Path

from rnnexp.errors import CheckpointError


def load_checkpoint(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={str(path)!r}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain "
                              f"data, which could run code ({first}); only load checkpoints you trust "
                              "and that rnnexp wrote") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None


def run_config_of(checkpoint: dict, path: str | Path) -> dict:
    config = checkpoint.get("hyper_parameters", {}).get("run_config")
    if not config:
        raise CheckpointError(f"{path}: no rnnexp run config inside; was it written by rnnexp-train?")
    return config
