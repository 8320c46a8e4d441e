"""The search space of `hparams_search=optuna`: Hydra's sweep syntax to Optuna distributions, and
a sampled trial back to command-line overrides.

    hydra.sweeper.params (conf/hparams_search/optuna.yaml)     Optuna distribution
    choice(32, 64, 128) / a,b,c                                  categorical
    range(1, 4) / range(0.1, 0.5, 0.1)                           int / float with that step (stop excluded)
    interval(1e-4, 1e-2)                                         float, uniform
    int(interval(1, 8))                                          int, uniform
    tag(log, interval(1e-4, 1e-2)), tag(log, int(interval(8, 256)))   the same, log-uniform
    shuffle(...) of a choice or range                            categorical (order does not matter to Optuna)
    a plain value (bptt: truncated)                              not searched: the same override for every trial

A sweep on the command line (`cell=lstm,gru`) joins the space and replaces the config's entry for
that key; a plain command-line override (`cell=gru`) is passed to every trial and takes its key
out of the space. Torch- and Optuna-free at import
(Hydra imports every plugin module on every `rnnexp-train` start).
"""


import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, Quote, QuotedString, RangeSweep
from hydra.errors import HydraException

# in rnnexp.errors, not here: Hydra's plugin scan runs this module again, which would make a
# second SearchSpaceError class that `except SearchSpaceError` elsewhere does not catch
from rnnexp.errors import SearchSpaceError


@dataclass
class SearchSpace:
    # key -> optuna distribution, in the order given (config first, then the command line)
    distributions: dict[str, Any] = field(default_factory=dict)
    # overrides every trial gets unchanged: plain command-line ones and fixed entries of params
    fixed: list[str] = field(default_factory=list)


def flatten(params: Mapping | None, prefix: str = "") -> dict[str, Any]:
    """`{optimizer: {lr: ...}}` (what `hydra.sweeper.params.optimizer.lr=...` on the command line
    builds) and `{optimizer.lr: ...}` (what the YAML file says) are the same key."""
    flat: dict[str, Any] = {}
    for name, value in (params or {}).items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _text(override: Override) -> str:
    """What was written after `=`."""
    return (override.input_line or "").partition("=")[2]


def distribution_of(override: Override, key: str) -> Any:
    """The Optuna distribution of one sweep override (`override.is_sweep_override()`); `key` is how
    errors name it (`hydra.sweeper.params.<key>`, or the key as the command line gave it)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        choices = list(override.sweep_iterator())
        if not choices:
            raise SearchSpaceError(f"{key}: an empty choice() has nothing to sample")
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool))]
        if bad:
            raise SearchSpaceError(f"{key}: choice() values must be strings, numbers or "
                                   f"booleans (got {bad[0]!r}); write a group option or a quoted string instead")
        return CategoricalDistribution(choices)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())
        if not values:
            raise SearchSpaceError(f"{key}: {_text(override)} is empty "
                                   "(range stops before it starts)")
        if sweep.shuffle or len(values) == 1:
            return CategoricalDistribution(values)
        if all(isinstance(v, int) for v in values) and isinstance(sweep.step, int):
            return IntDistribution(values[0], values[-1], step=sweep.step) if sweep.step > 0 else \
                CategoricalDistribution(values)
        # a float range: the values Python-style range() gives, last one included as Optuna's high
        return FloatDistribution(min(values), max(values), step=abs(float(sweep.step)))
    if isinstance(sweep, IntervalSweep):
        low, high, log = sweep.start, sweep.end, "log" in sweep.tags
        if low is None or high is None or not low < high:
            raise SearchSpaceError(f"{key}: interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise SearchSpaceError(f"{key}: a log interval needs low > 0 (got {low})")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{key}: {_text(override)} is not a "
                           "search range; use choice(...), range(...), interval(...) or tag(log, interval(...))")


def build_space(params: Mapping | None, arguments: list[str]) -> SearchSpace:
    """The space from `hydra.sweeper.params` plus the command-line `arguments` of the sweep."""
    parser = OverridesParser.create()
    space = SearchSpace()
    entries: dict[str, Override] = {}
    labels: dict[str, str] = {}  # how an error names the entry
    for key, value in flatten(params).items():
        text = f"{key}={value}" if not isinstance(value, bool) else f"{key}={str(value).lower()}"
        try:
            entries[key] = parser.parse_override(text if value is not None else f"{key}=null")
            labels[key] = f"hydra.sweeper.params.{key}"
        except HydraException as exc:
            raise SearchSpaceError(f"hydra.sweeper.params.{key}={value!r} does not parse: {exc}") from None
    try:
        command_line = parser.parse_overrides(list(arguments))
    except HydraException as exc:
        raise SearchSpaceError(str(exc)) from None
    for override in command_line:
        key = override.key_or_group  # without a +/~/++ prefix
        if override.is_sweep_override():
            if override.is_delete() or override.is_add() or override.is_force_add():
                raise SearchSpaceError(f"{override.input_line}: a searched key cannot be added (+) or deleted (~) "
                                       "per trial; set its range without the prefix")
            entries.pop(key, None)
            entries[key], labels[key] = override, key
        else:  # set on the command line: the same for every trial, and no longer searched
            entries.pop(key, None)
            space.fixed.append(override.input_line)
    for key, override in entries.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution_of(override, labels[key])
        else:
            space.fixed.append(f"{key}={_text(override)}")
    return space


_PLAIN = re.compile(r"[A-Za-z0-9_.+-]+")


def override_value(value: Any) -> str:
    """A sampled value as Hydra's override grammar reads it back: the same type and value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 0.00123, 1e-05, inf: Hydra reads each back as that float
    text = str(value)
    if _PLAIN.fullmatch(text) and not _looks_like_other_type(text):
        return text
    return QuotedString(text=text, quote=Quote.single).with_quotes()


def _looks_like_other_type(text: str) -> bool:
    """A string Hydra would read as a number, boolean or null unless quoted."""
    if text.lower() in ("true", "false", "null", "nan", "inf", "-inf", "+inf"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
