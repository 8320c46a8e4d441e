"""User-facing errors: one line that names the key or file, the value given and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class RnnexpError(Exception):
    """An error the user can fix from the command line; shown as one line, no traceback."""


class ConfigError(RnnexpError):
    def __init__(self, key: str, value, allowed: Iterable | str | None = None, hint: str = ""):
        self.key, self.value = key, value
        if allowed is None:
            allowed_text = ""
        elif isinstance(allowed, str):
            allowed_text = f"; allowed: {allowed}"
        else:
            allowed_text = "; allowed: " + ", ".join(str(a) for a in allowed)
        hint_text = f" ({hint})" if hint else ""
        super().__init__(f"{key}={value!r} is not valid{allowed_text}{hint_text}")


class DataError(RnnexpError):
    """A data file is missing, unreadable or not what it claims to be."""


class DataNotFoundError(DataError):
    """The data are not where this source looks; `data.source=auto` moves on to the next source."""


class CheckpointError(RnnexpError):
    """A checkpoint is missing, unsafe to load, or does not fit the model."""


class DivergenceError(RnnexpError):
    """A training loss or the weights became NaN or infinite; the run stops with its last good checkpoint."""

    def __init__(self, step: int, what: str, value: float, hint: str):
        self.step, self.what, self.value = step, what, value
        super().__init__(f"diverged at step {step}: {what} is {value} ({hint})")


class SearchSpaceError(RnnexpError):
    """A search-space entry (hparams_search=optuna) Optuna cannot sample; the message names the key
    and the fix."""
