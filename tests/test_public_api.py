"""rnnexp uses only the public APIs of Lightning, lightning_fabric, Hydra and torch, and patches none
of their functions.

Each .py under rnnexp/ is parsed with `ast` (nothing is imported) and these are reported:
- importing a private name: `from hydra._internal.x import Y`, `from pytorch_lightning.trainer.call
  import _call_callback_hooks`, `import torch._dynamo`;
- reaching a private attribute through an imported library name: `torch._C`, `call._call_hooks`;
- reaching a private attribute of a library object held in a variable (`self._trainer` in a
  LightningModule, `writer._get_file_writer()`, `pl_module._current_fx_name`): an `x._name` whose
  `_name` rnnexp itself never defines (as a function, class, variable, argument or `self._name`),
  so it can only be a library's; attributes of modules imported from other libraries (the
  standard library's `sys._getframe`, ...) are not this test's business;
- patching a library: assigning to an attribute of an imported library module or class
  (`call._call_callback_hooks = ours`, `Trainer.fit = ...`), or `setattr`/`delattr`/
  `mock.patch.object` on one, or `mock.patch("torch....")`.
Dunder names (`__version__`) are public. One case per top-level subpackage of rnnexp/ (and one for
the modules directly in it), so each part's offenders are reported on their own.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rnnexp"
PLUGINS = PACKAGE.parent / "hydra_plugins"  # rnnexp's own Hydra plugins, held to the same rule
LIBRARIES = frozenset({"torch", "pytorch_lightning", "lightning", "lightning_fabric", "hydra", "optuna",
                       "submitit", "torchmetrics", "tensorboard"})
# Hydra's launcher and sweeper plugins of other packages share the hydra_plugins namespace
LIBRARY_PLUGINS = ("hydra_plugins.hydra_",)

# Underscored names that are documented public API, by dotted name as written in the source.
DOCUMENTED = {
    # torch's "Dynamic Shapes" guide (torch.compiler) tells users to mark a dimension dynamic with
    # torch._dynamo.mark_dynamic / maybe_mark_dynamic; torch 2.14 has no other public name for them.
    "torch._dynamo.maybe_mark_dynamic",
    "torch._dynamo.mark_dynamic",
}
# Underscored methods of the standard library's namedtuple, public by its documentation.
PUBLIC_UNDERSCORED = frozenset({"_asdict", "_replace", "_make", "_fields", "_field_defaults"})



def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def documented(dotted: str) -> bool:
    return any(dotted == name or dotted.startswith(name + ".") for name in DOCUMENTED)


def is_library(module: str) -> bool:
    return module.split(".")[0] in LIBRARIES or module.startswith(LIBRARY_PLUGINS)


@dataclass(frozen=True)
class Offence:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


@dataclass
class OwnNames:
    """The names rnnexp's own code defines: `anywhere` (functions, classes, variables, arguments,
    import aliases, attributes set on `self` or `cls`), and per class what the class itself defines
    (its methods and class attributes, what it sets on `self`/`cls`) with the names of its bases."""

    anywhere: set[str]
    classes: dict[str, tuple[set[str], list[str]]]

    def of_class(self, name: str, seen: frozenset = frozenset()) -> set[str]:
        """What class `name` and its rnnexp base classes define (a library base class adds nothing)."""
        if name not in self.classes or name in seen:
            return set()
        own, bases = self.classes[name]
        return own.union(*(self.of_class(base, seen | {name}) for base in bases))


def _self_store(node: ast.AST) -> str | None:
    if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
        return node.attr
    return None


def defined_names(trees: list[ast.AST]) -> OwnNames:
    names = OwnNames(set(), {})
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.anywhere.add(node.name)
            elif isinstance(node, ast.arg):
                names.anywhere.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.anywhere.add(node.id)
            elif _self_store(node):
                names.anywhere.add(node.attr)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                if isinstance(node, ast.ImportFrom) and is_library(node.module or ""):
                    continue
                names.anywhere.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
            if isinstance(node, ast.ClassDef):
                own = {_self_store(n) for n in ast.walk(node)} - {None}
                for statement in node.body:
                    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        own.add(statement.name)
                    elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
                        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                        own.update(t.id for t in targets if isinstance(t, ast.Name))
                bases = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))]
                known = names.classes.get(node.name, (set(), []))
                names.classes[node.name] = (known[0] | own, known[1] + bases)
    return names


def _root(node: ast.AST) -> ast.AST:
    """The innermost object of an attribute chain: `a` of `a.b.c`, the call of `f().x`."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "(...)")
    return ".".join(reversed(parts))


class Checker:
    def __init__(self, path: str, tree: ast.AST, rnnexp_names: OwnNames):
        self.path, self.tree, self.rnnexp_names = path, tree, rnnexp_names
        self.library: dict[str, str] = {}  # local name -> the library object it is bound to
        self.other: set[str] = set()  # local names bound to other libraries' modules and objects
        self.offences: list[Offence] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.offences.append(Offence(self.path, getattr(node, "lineno", 0), what))

    def run(self) -> list[Offence]:
        # imports anywhere in the module (rnnexp imports lazily, inside functions) bind names
        # for the whole module: the names differ enough that scopes need not be told apart
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self.imports(node)
            elif isinstance(node, ast.ImportFrom):
                self.imports_from(node)
        self.inner = {id(node.value) for node in ast.walk(self.tree) if isinstance(node, ast.Attribute)}
        self.visit(self.tree, None)
        return self.offences

    def visit(self, node: ast.AST, cls: str | None) -> None:
        """Every node, knowing the class whose body (methods included) it is in."""
        if isinstance(node, ast.Attribute):
            if id(node) not in self.inner:  # each chain `a.b.c` once, from its outermost attribute
                self.chain(node, cls)
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                self.assignment(node)
        elif isinstance(node, ast.Call):
            self.call(node, cls)
        inside = node.name if isinstance(node, ast.ClassDef) else cls
        for child in ast.iter_child_nodes(node):
            self.visit(child, inside)

    def imports(self, node: ast.Import) -> None:
        for alias in node.names:
            if not is_library(alias.name):
                self.other.add(alias.asname or alias.name.split(".")[0])
                continue
            if any(is_private(part) for part in alias.name.split(".")):
                self.report(node, f"imports private {alias.name}")
            if alias.asname:
                self.library[alias.asname] = alias.name
            else:
                self.library[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def imports_from(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or not is_library(module):
            if not node.level and not module.startswith("rnnexp"):
                self.other.update(alias.asname or alias.name for alias in node.names)
            return
        for alias in node.names:
            dotted = f"{module}.{alias.name}"
            if any(is_private(part) for part in dotted.split(".")) and not documented(dotted):
                self.report(node, f"imports private {dotted}")
            self.library[alias.asname or alias.name] = dotted

    def _library_dotted(self, node: ast.AST) -> str | None:
        """`torch._dynamo.x` for an attribute chain rooted in a name bound to a library."""
        root = _root(node)
        if isinstance(root, ast.Name) and root.id in self.library:
            return self.library[root.id] + _dotted(node)[len(root.id):]
        return None

    def chain(self, node: ast.Attribute, cls: str | None) -> None:
        library = self._library_dotted(node)
        if library is not None:
            parts = library.split(".")
            if any(is_private(part) for part in parts) and not documented(library):
                first = next(i for i, part in enumerate(parts) if is_private(part))
                self.report(node, f"uses private {'.'.join(parts[:first + 1])}")
            return
        root = _root(node)
        if isinstance(root, ast.Name) and root.id in self.other:
            return  # another library's object: not this test's business
        attrs = []
        while isinstance(node, ast.Attribute):
            attrs.append(node)
            node = node.value
        attrs.reverse()  # from the root outwards: the first offending name is reported
        if cls is not None and isinstance(root, ast.Name) and root.id in ("self", "cls"):
            # on `self`: a private name must be the class's own (or an rnnexp base class's), or
            # it is a library base class's, as `self._trainer` is a LightningModule's
            first, attrs = attrs[0], attrs[1:]
            if is_private(first.attr) and first.attr not in self.rnnexp_names.of_class(cls):
                self.report(first, f"uses {_dotted(first)}: {first.attr} is not defined by {cls} or its "
                                   "rnnexp base classes, so a library base class's private one")
                return
        for attr in attrs:
            if (is_private(attr.attr) and attr.attr not in PUBLIC_UNDERSCORED
                    and attr.attr not in self.rnnexp_names.anywhere):
                self.report(attr, f"uses {_dotted(attr)}: {attr.attr} is no name of rnnexp's, so a "
                                  "library's private one")
                return

    def assignment(self, node: ast.Attribute) -> None:
        library = self._library_dotted(node.value)
        if library is not None:
            verb = "deletes" if isinstance(node.ctx, ast.Del) else "assigns"
            self.report(node, f"patches {library}: {verb} {library}.{node.attr}")

    def call(self, node: ast.Call, cls: str | None) -> None:
        func, args = node.func, node.args
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("getattr", "setattr", "delattr", "hasattr") and len(args) >= 2:
            target, attr = args[0], args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                self.chain(ast.Attribute(value=target, attr=attr.value, ctx=ast.Load(), lineno=node.lineno), cls)
            library = self._library_dotted(target)
            if name in ("setattr", "delattr") and library is not None:
                self.report(node, f"patches {library}: {name}({library}, ...)")
        elif name == "object" and _dotted(func).endswith("patch.object"):
            library = self._library_dotted(args[0]) if args else None
            if library is not None:
                self.report(node, f"patches {library}: mock.patch.object({library}, ...)")
        elif (name == "patch" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str)
              and is_library(args[0].value)):
            self.report(node, f"patches {args[0].value}: mock.patch({args[0].value!r})")


def parse(files: list[Path]) -> dict[Path, ast.AST]:
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in files}


def offences_in(files: list[Path], names_from: list[Path] | None = None) -> list[Offence]:
    """The offences of `files`; rnnexp's own names are read from `names_from` (default: `files`)."""
    trees = parse(files)
    names = defined_names(list(parse(names_from).values()) if names_from else list(trees.values()))
    found = []
    for path, tree in trees.items():
        found += Checker(str(path), tree, names).run()
    return found


def _parts() -> list:
    """One case per subpackage of rnnexp/ and one for the modules directly in it."""
    parts = [pytest.param(".", id="rnnexp")]
    for sub in sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        parts.append(pytest.param(sub, id=f"rnnexp.{sub}"))
    for plugin in sorted(p.name for p in PLUGINS.glob("*") if p.is_dir() and list(p.glob("*.py"))):
        parts.append(pytest.param(f"../hydra_plugins/{plugin}", id=f"hydra_plugins.{plugin}"))
    return parts


@pytest.mark.parametrize("part", _parts())
def test_rnnexp_uses_only_public_library_apis_and_patches_none(part):
    everything = sorted([*PACKAGE.rglob("*.py"), *PLUGINS.rglob("*.py")])
    files = sorted(PACKAGE.glob("*.py")) if part == "." else sorted((PACKAGE / part).rglob("*.py"))
    assert files
    found = offences_in(files, names_from=everything)
    assert not found, "private library APIs or patches of a library:\n" + "\n".join(
        str(offence).replace(str(PACKAGE.parent) + "/", "") for offence in found)


def _check(source: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "example.py"
    path.write_text(source)
    return [o.what for o in offences_in([path])]


@pytest.mark.parametrize("source, expected", [
    pytest.param("from pytorch_lightning.trainer.call import _call_callback_hooks", "imports private pytorch_lightning.trainer.call._call_callback_hooks", id='private-name-import'),
    pytest.param("from hydra._internal.config_loader_impl import ConfigLoaderImpl", "imports private hydra._internal.config_loader_impl.ConfigLoaderImpl", id='private-module-import'),
    pytest.param("import torch._dynamo", "imports private torch._dynamo", id='import-private-module'),
    pytest.param("from lightning_fabric.utilities.types import _Stateful", "imports private lightning_fabric.utilities.types._Stateful", id='private-fabric-type'),
    pytest.param("from pytorch_lightning.trainer import call\nf = call._call_strategy_hook", "uses private pytorch_lightning.trainer.call._call_strategy_hook", id='library-alias-attribute'),
    pytest.param("import torch\nx = torch._C._get_tracing_state()", "uses private torch._C", id='torch-C'),
    pytest.param("import pytorch_lightning as pl\ndef f(trainer):\n    return trainer._accelerator_connector", "uses trainer._accelerator_connector", id='trainer-attribute'),
    pytest.param("import pytorch_lightning as pl\nclass Own:\n    def __init__(self):\n        self._trainer = None\n"
                 "class M(pl.LightningModule):\n    def f(self):\n        return self._trainer", "uses self._trainer",
                 id='self-trainer'),
    pytest.param("def f(writer):\n    return writer._get_file_writer()", "uses writer._get_file_writer", id='summary-writer'),
    pytest.param("def f(pl_module):\n    pl_module._current_fx_name = 'x'", "uses pl_module._current_fx_name", id='fx-name-write'),
    pytest.param("from pytorch_lightning.trainer import call\ndef ours(): pass\ncall.run = ours", "patches pytorch_lightning.trainer.call: assigns pytorch_lightning.trainer.call.run", id='module-function-replaced'),
    pytest.param("from pytorch_lightning import Trainer\nTrainer.fit = print", "patches pytorch_lightning.Trainer: assigns pytorch_lightning.Trainer.fit", id='class-method-replaced'),
    pytest.param("from pytorch_lightning.trainer import call\nsetattr(call, 'x', 1)", "patches pytorch_lightning.trainer.call: setattr(pytorch_lightning.trainer.call, ...)", id='setattr-on-module'),
    pytest.param("from hydra.core import x\ngetattr(x.C, '_parse')", "uses private hydra.core.x.C._parse", id='getattr-private-string'),
    pytest.param("import torch\nfrom unittest import mock\nmock.patch.object(torch.Tensor, 'item')", "patches torch.Tensor: mock.patch.object(torch.Tensor, ...)", id='mock-patch-object'),
    pytest.param("from unittest import mock\nmock.patch('torch.cuda.is_available')", "patches torch.cuda.is_available: mock.patch('torch.cuda.is_available')", id='mock-patch-string'),
])
def test_the_check_finds_each_kind_of_offence(tmp_path, source, expected):
    found = _check(source, tmp_path)
    assert any(what.startswith(expected) for what in found), found


def test_the_check_leaves_public_and_own_names_alone(tmp_path):
    source = """
import os, sys, collections
import torch
import pytorch_lightning as pl
from torch.utils.tensorboard import SummaryWriter

print(torch.__version__, pl.__version__, sys._getframe(0), os._exit)
Point = collections.namedtuple("Point", "x y")
Point(1, 2)._asdict()

class Own(pl.Callback):
    def __init__(self):
        self._seen = 0
    def _helper(self):
        return self._seen
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.should_stop = True  # public attributes of library objects may be set
        pl_module.last_batch = None
        return self._helper(), SummaryWriter.add_scalar, torch._dynamo.maybe_mark_dynamic
"""
    assert _check(source, tmp_path) == []
