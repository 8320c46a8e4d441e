"""What every user-facing config key accepts, read from conf/ itself.

`rnnexp.build.validate` checks a composed config against this before anything is built, so a bad
value on the command line ends in one line naming the key, the value and what is allowed
(`trainer.max_epochs='abc' is not valid; allowed: an integer > 0, ...`), never in a TypeError
deep inside Lightning. Torch-free: it runs before torch is imported.

A key's type is the union of the types of the values conf/ gives it, in conf/train.yaml and in
every option of every group (experiment presets included): a key that is an integer everywhere
takes an integer; a key that is a float somewhere takes any number; a boolean takes true or
false; a string takes a string (or a number: `name=2024` is a name); a key that is null somewhere
may be null. A key whose value is `${other.key}` has the type of other.key. Categorical keys take
only the values `rnnexp.choices.CHOICES_BY_KEY` lists, and RULES below adds the ranges (checked
after all types, so a range may read other keys). A new key in conf/ is checked from the day it is
added. Keys under `hydra.` and `paths.` and Hydra's own `_target_`-style keys are not checked, nor
keys conf/ does not know (`+key=value`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.choices import CHOICES_BY_KEY
from rnnexp.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the tree rnnexp-train composes
SKIPPED_ROOTS = ("hydra", "paths")  # Hydra's own settings; file system locations
KIND_TEXT = {"int": "an integer", "float": "a number", "bool": "true, false", "str": "a string",
             "list": "a list, e.g. [a, b]"}
_PACKAGE = re.compile(r"#\s*@package\s+(\S+)")
_REFERENCE = re.compile(r"\$\{(\.*)([A-Za-z_][\w.]*)\}")  # the whole value is one ${key}, no resolver


@dataclass(frozen=True)
class Rule:
    """What a key accepts beyond its type: `test(value, cfg)` sees a value of the right type (and
    other keys already type-checked); `allowed` is said for a wrong type and a wrong value alike."""

    allowed: str
    test: Callable[[object, DictConfig], bool]
    nullable: bool = False  # null is accepted (and not tested) even if conf/ never says null
    extra_kinds: tuple[str, ...] = ()  # kinds accepted besides conf/'s, left to `test`


def _devices(value, cfg) -> bool:
    if isinstance(value, str):
        return value == "auto" or re.fullmatch(r"\s*-?\d+(\s*,\s*\d+)*\s*,?\s*", value) is not None
    if isinstance(value, (list, ListConfig)):
        return all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return True


# The ranges, in the order they are checked (after every key's type).
RULES: dict[str, Rule] = {
    "model.hidden_size": Rule("an integer > 0", lambda v, cfg: v > 0),
    "model.num_layers": Rule("an integer > 0", lambda v, cfg: v > 0),
    "data.batch_size": Rule("an integer > 0", lambda v, cfg: v > 0),
    "trainer.max_epochs": Rule("an integer > 0, or -1 with trainer.max_steps > 0",
                               lambda v, cfg: v > 0 or (v == -1 and OmegaConf.select(cfg, "trainer.max_steps", default=-1) > 0)),
    "trainer.max_steps": Rule("an integer > 0, or -1 for no step limit", lambda v, cfg: v > 0 or v == -1),
    "model.dropout": Rule("a number in [0, 1)", lambda v, cfg: 0.0 <= v < 1.0),
    "optimizer.lr": Rule("a number > 0, e.g. optimizer.lr=1e-3", lambda v, cfg: math.isfinite(v) and v > 0),
    "data.eval_batch_size": Rule("an integer > 0", lambda v, cfg: v > 0),
    "trainer.gradient_clip_val": Rule("a number >= 0 (0 = no clipping)", lambda v, cfg: v >= 0, nullable=True),
    "trainer.devices": Rule("an integer, auto, or a list of device indices, e.g. [0, 1]", _devices,
                            extra_kinds=("str", "list")),
    "callbacks.divergence_guard.check_every_n_steps": Rule("an integer >= 1 (1 = every step)",
                                                           lambda v, cfg: v >= 1, nullable=True),
    "callbacks.periodic_checkpoint.every_n_seconds": Rule("a number >= 0 (0 = by steps only)",
                                                          lambda v, cfg: v >= 0, extra_kinds=("float",)),
    "data.download_timeout_s": Rule("a number of seconds > 0", lambda v, cfg: v > 0, extra_kinds=("float",)),
    "data.test_dir": Rule("a folder holding t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or null",
                          lambda v, cfg: v != "", nullable=True, extra_kinds=("str",)),
}


def _show(choice) -> str:
    return "null" if choice is None else str(choice).lower() if isinstance(choice, bool) else str(choice)


@dataclass(frozen=True)
class Field:
    """One leaf key: the kinds of value it takes (`int`, `float`: any number, `bool`, `str`,
    `list`; none known: anything), whether null, or else a closed list of choices."""

    key: str
    kinds: frozenset[str] = frozenset()
    optional: bool = False
    choices: tuple | None = None
    allowed: str = ""  # what the error message says, when not derived from the above

    def accepts(self, value) -> bool:
        if self.choices is not None:  # typed: 1 is not true, "32" is not 32 (both are choices where meant)
            return any(type(value) is type(choice) and value == choice for choice in self.choices)
        if value is None:
            return self.optional or not self.kinds
        if not self.kinds:
            return True
        if isinstance(value, bool):
            return "bool" in self.kinds
        if isinstance(value, int):
            return bool(self.kinds & {"int", "float", "str"})
        if isinstance(value, float):
            return bool(self.kinds & {"float", "str"})
        if isinstance(value, str):
            return "str" in self.kinds
        if isinstance(value, (list, ListConfig)):
            return "list" in self.kinds
        return False  # a mapping where a value belongs

    def describe(self) -> str:
        if self.allowed:
            return self.allowed
        if self.choices is not None:
            return ", ".join(dict.fromkeys(_show(choice) for choice in self.choices))
        kinds = [kind for kind in KIND_TEXT if kind in self.kinds and not (kind == "int" and "float" in self.kinds)]
        return " or ".join(KIND_TEXT[kind] for kind in kinds) + (" or null" if self.optional else "")


@dataclass
class Schema:
    fields: dict[str, Field]
    containers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mapping key -> its keys


def skipped(key: str) -> bool:
    """Not a user value: Hydra's settings, paths, and Hydra's `_target_`, `_partial_`, ... keys."""
    last = key.rsplit(".", 1)[-1]
    return key.split(".", 1)[0] in SKIPPED_ROOTS or (len(last) > 2 and last[0] == last[-1] == "_")


def _package(path: Path, group: str) -> str:
    """Where a file's keys land: its `# @package` header, else its group (conf/data/x.yaml: data)."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = _PACKAGE.match(line)
        if match:
            package = match.group(1).replace("_group_", group.replace("/", "."))
            return "" if package == "_global_" else package
    return group.replace("/", ".")


def config_files(conf_dir: Path = CONF_DIR) -> Iterator[tuple[str, Path]]:
    """(group, file) for conf/train.yaml (group "") and every option of every group that holds
    user values (not hydra/, not paths/)."""
    yield "", conf_dir / "train.yaml"
    for path in sorted(conf_dir.rglob("*.yaml")):
        group = path.parent.relative_to(conf_dir).as_posix()
        if group != "." and group.split("/")[0] not in SKIPPED_ROOTS:
            yield group, path


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """YAML as OmegaConf reads it (YAML 1.2 floats: 1e-3 is a number; no timestamps), at the
    speed of libyaml: OmegaConf.load of every file of conf/ takes ~20x as long.
    tests/test_config_types.py checks both read every file of conf/ the same."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE), list("-+0123456789."))
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()}


def load_yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader) or {}


def _collect(node: dict, prefix: str, values: dict[str, list], containers: dict[str, set]) -> None:
    for name, value in node.items():
        key = f"{prefix}{name}"
        if skipped(key):
            continue
        if isinstance(value, dict):
            containers.setdefault(key, set()).update(str(child) for child in value)
            _collect(value, key + ".", values, containers)
        else:
            values.setdefault(key, []).append(value)


def _referenced(key: str, text: str) -> str | None:
    """The key `text` refers to when it is exactly `${key}`, `${.sibling}`, `${..uncle}`, ..."""
    match = _REFERENCE.fullmatch(text)
    if not match:
        return None
    dots, target = match.groups()
    if not dots:
        return target
    parents = key.split(".")[:-1]
    parents = parents[:len(parents) - (len(dots) - 1)]
    return ".".join([*parents, target])


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list"}.get(type(value), "")


def build_schema(conf_dir: Path = CONF_DIR) -> Schema:
    values: dict[str, list] = {}
    containers: dict[str, set] = {}
    for group, path in config_files(conf_dir):
        node = load_yaml(path)
        node.pop("defaults", None)  # Hydra's defaults list, not config
        package = _package(path, group) if group else ""
        if package and not skipped(package):  # conf/data/adding.yaml: the mapping `data`
            containers.setdefault(package, set()).update(str(name) for name in node)
        _collect(node, f"{package}." if package else "", values, containers)

    kinds: dict[str, set] = {}
    optional: dict[str, bool] = {}
    references: dict[str, set] = {}
    for key, seen in values.items():
        kinds[key], optional[key], references[key] = set(), False, set()
        for value in seen:
            if value is None:
                optional[key] = True
            elif isinstance(value, str) and "${" in value:
                target = _referenced(key, value)
                if target is not None:
                    references[key].add(target)
                elif not re.fullmatch(r"\$\{[^}]*\}", value):  # text around it: a string
                    kinds[key].add("str")
                # else one resolver call (${oc.env:...}): its type is not known here
            else:
                kinds[key].add(_kind(value))
    for _ in range(5):  # ${a} -> ${b} -> value: follow references a few levels deep
        for key, targets in references.items():
            for target in targets:
                kinds[key] |= kinds.get(target, set())
                optional[key] |= optional.get(target, False)

    fields = {}
    for key in sorted(set(values) | set(CHOICES_BY_KEY) | set(RULES)):
        choices = CHOICES_BY_KEY.get(key)
        if choices is None:  # ${data.metric_mode} takes the choices of data.metric_mode
            choices = next((CHOICES_BY_KEY[t] for t in sorted(references.get(key, ())) if t in CHOICES_BY_KEY), None)
        rule = RULES.get(key)
        fields[key] = Field(key, frozenset(kinds.get(key, set()) - {""}) | frozenset(rule.extra_kinds if rule else ()),
                            optional=optional.get(key, False) or bool(rule and rule.nullable),
                            choices=choices, allowed=rule.allowed if rule else "")
    return Schema(fields, {key: tuple(sorted(children)) for key, children in containers.items()})


@lru_cache(maxsize=1)
def schema() -> Schema:
    """The schema of conf/, built once per process (~40 small files)."""
    return build_schema()


_ABSENT = object()


def _leaves(node: DictConfig, prefix: str, fields: dict) -> Iterator[tuple[str, object, bool]]:
    """(key, value, is_interpolation) of every leaf, values unresolved; mappings are descended
    into unless the schema says a single value belongs there."""
    for name in node:
        key = f"{prefix}{name}"
        if skipped(key) or OmegaConf.is_missing(node, name):
            continue
        if OmegaConf.is_interpolation(node, name):
            yield key, None, True
            continue
        value = node[name]
        if isinstance(value, DictConfig) and key not in fields:
            yield from _leaves(value, key + ".", fields)
        else:
            yield key, value, False


def check_types(cfg: DictConfig) -> None:
    """Raise ConfigError for the first leaf whose value is not of its key's type (or choices)."""
    known = schema()
    interpolated = []
    for key, value, is_interpolation in _leaves(cfg, "", known.fields):
        if is_interpolation:
            interpolated.append(key)
            continue
        spec = known.fields.get(key)
        if spec is not None and not spec.accepts(value):
            raise ConfigError(key, value, spec.describe())
        if spec is None and key in known.containers and value is not None:
            keys = ", ".join(name for name in known.containers[key] if not skipped(name))
            raise ConfigError(key, value, f"a mapping (of {keys}) or null")
    # ${...} values: their sources were checked above; what a user's own ${...} resolves to is
    # checked here (free strings are left alone: resolving them may need Hydra's runtime)
    for key in interpolated:
        spec = known.fields.get(key)
        if spec is None or (spec.kinds <= {"str"} and spec.choices is None):
            continue
        try:
            value = OmegaConf.select(cfg, key)
        except OmegaConfBaseException:
            continue  # left to whoever reads it
        if not isinstance(value, DictConfig) and not spec.accepts(value):
            raise ConfigError(key, value, spec.describe())


def check_ranges(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key of RULES whose value is out of its range; call after
    check_types (a rule's test assumes the right type)."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and rule.nullable):
            continue
        if not rule.test(value, cfg):
            raise ConfigError(key, value, rule.allowed)
