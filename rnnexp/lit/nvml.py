"""Undo a per-step cost that importing Lightning adds on machines without NVIDIA's driver library.

`lightning_fabric` sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported, so that asking "is CUDA
available?" goes through NVML and never initialises CUDA in a process that may fork later.
torch's optimizers ask that question on every `step()`. Where libnvidia-ml cannot be loaded
(any machine without an NVIDIA driver), each ask tries to load it again, fails, and falls back to
the CUDA runtime's device count anyway: about 50 microseconds per optimizer step for nothing, and
no protection against fork either, since the fallback is the very call the variable avoids.
There, and only there, the variable is dropped.
"""

from __future__ import annotations

import ctypes
import os

VARIABLE = "PYTORCH_NVML_BASED_CUDA_CHECK"
LIBRARY = "libnvidia-ml.so.1"  # the name torch.cuda loads


def drop_futile_nvml_check() -> bool:
    """Unset VARIABLE when it is set and NVML cannot be loaded; True when it was unset."""
    if os.environ.get(VARIABLE) != "1":
        return False
    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        del os.environ[VARIABLE]
        return True
    return False
