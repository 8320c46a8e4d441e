"""rnnexp's trainers do not call hooks whose body is empty.

On every training step Lightning calls six callback hooks on every callback (on_train_batch_start,
on_before_zero_grad, on_before_backward, on_after_backward, on_before_optimizer_step,
on_train_batch_end) and about ten LightningModule hooks, whether a class implements them or
inherits the base class's empty body. Each call costs a few microseconds of Python: a debug
message formatted whether or not it is shown, the profiler's context with a name built from the
callback's `state_key` (ModelCheckpoint's formats a dict each time), `_current_fx_name` set and
reset; more with the caches cold after a backward pass. With rnnexp's default callbacks that is up
to ~1% of an LSTM-128 training step here (scripts/hook_dispatch_ab.py, README "Performance").

Calling an empty body does nothing and returns None, so not calling it changes nothing but the time.
`install()` replaces Lightning's callback, LightningModule and strategy dispatch functions
(`pytorch_lightning.trainer.call`, which the loops look up on every call). For a trainer whose
profiler is rnnexp's `NoProfiler` (the default, which records nothing) they call each hook as
Lightning does, in the same order, with the same arguments and `_current_fx_name`, minus what does
nothing there: hooks with an empty body, the profiler's context, and the debug message when debug
logging is off. Any other profiler (`trainer.profiler=simple|advanced|pytorch`), and any Trainer
rnnexp did not build, goes through Lightning's own functions untouched, so a profile still lists
every hook.
"""

from __future__ import annotations

import dis
import logging
from collections.abc import Callable
from types import CodeType
from typing import Any

from pytorch_lightning.callbacks import Checkpoint, EarlyStopping
from pytorch_lightning.trainer import call

from rnnexp.lit.profiler import NoProfiler

log = logging.getLogger(call.__name__)  # Lightning's own debug messages, under its logger's name

_LIGHTNING_CALLBACK_HOOKS = call._call_callback_hooks
_LIGHTNING_MODULE_HOOK = call._call_lightning_module_hook
_LIGHTNING_STRATEGY_HOOK = call._call_strategy_hook

_empty_code: dict[CodeType, bool] = {}


def has_empty_body(fn: Callable) -> bool:
    """True for a function (or bound method) whose body only returns None: `pass`, `...`, a
    docstring. Read from its bytecode once per code object, so it holds on any Python version."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is None:  # a builtin, a functools.partial, a callable object: call it
        return False
    empty = _empty_code.get(code)
    if empty is None:
        steps = [(i.opname, i.argval) for i in dis.get_instructions(code)
                 if i.opname not in ("RESUME", "NOP", "CACHE")]
        empty = steps in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])
        _empty_code[code] = empty
    return empty


def _records_nothing(trainer) -> bool:
    """True for rnnexp's NoProfiler: the trainers whose hooks this module calls."""
    return type(trainer.profiler) is NoProfiler


def call_callback_hooks(trainer, hook_name: str, *args: Any, monitoring_callbacks: bool | None = None,
                        **kwargs: Any) -> None:
    """Lightning's `_call_callback_hooks`, minus the callbacks whose `hook_name` is empty."""
    if not _records_nothing(trainer):
        return _LIGHTNING_CALLBACK_HOOKS(trainer, hook_name, *args, monitoring_callbacks=monitoring_callbacks,
                                         **kwargs)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{trainer.__class__.__name__}: calling callback hook: {hook_name}")
    pl_module = trainer.lightning_module
    if pl_module:
        previous_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
    for callback in trainer.callbacks:
        if monitoring_callbacks is not None and (
                isinstance(callback, (EarlyStopping, Checkpoint)) is not monitoring_callbacks):
            continue
        fn = getattr(callback, hook_name)
        # NoProfiler's context records nothing: going without it is the same run, faster
        if callable(fn) and not has_empty_body(fn):
            fn(trainer, trainer.lightning_module, *args, **kwargs)
    if pl_module:
        pl_module._current_fx_name = previous_fx_name


def _call_as_fx(pl_module, hook_name: str, fn: Callable, args: tuple, kwargs: dict) -> Any:
    """fn(*args, **kwargs) with the module's `_current_fx_name` set to hook_name meanwhile."""
    previous_fx_name = pl_module._current_fx_name
    pl_module._current_fx_name = hook_name
    output = fn(*args, **kwargs)
    pl_module._current_fx_name = previous_fx_name  # restored only on success, as Lightning does
    return output


def call_lightning_module_hook(trainer, hook_name: str, *args: Any, pl_module=None, **kwargs: Any) -> Any:
    """Lightning's `_call_lightning_module_hook`, returning None at once for an empty hook."""
    module = pl_module or trainer.lightning_module
    if module is None or not _records_nothing(trainer):  # Lightning's error, or its profiled path
        return _LIGHTNING_MODULE_HOOK(trainer, hook_name, *args, pl_module=pl_module, **kwargs)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{trainer.__class__.__name__}: calling lightning module hook: {hook_name}")
    fn = getattr(module, hook_name)
    if not callable(fn) or has_empty_body(fn):
        return None
    return _call_as_fx(module, hook_name, fn, args, kwargs)


def call_strategy_hook(trainer, hook_name: str, *args: Any, **kwargs: Any) -> Any:
    """Lightning's `_call_strategy_hook` (training_step, backward, batch_to_device, ...), the same way."""
    if not _records_nothing(trainer):
        return _LIGHTNING_STRATEGY_HOOK(trainer, hook_name, *args, **kwargs)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{trainer.__class__.__name__}: calling strategy hook: {hook_name}")
    fn = getattr(trainer.strategy, hook_name)
    if not callable(fn) or has_empty_body(fn):
        return None
    return _call_as_fx(trainer.lightning_module, hook_name, fn, args, kwargs)


_ROUTES = {"_call_callback_hooks": (call_callback_hooks, _LIGHTNING_CALLBACK_HOOKS),
           "_call_lightning_module_hook": (call_lightning_module_hook, _LIGHTNING_MODULE_HOOK),
           "_call_strategy_hook": (call_strategy_hook, _LIGHTNING_STRATEGY_HOOK)}


def install() -> None:
    """Route Lightning's loops through the functions above (idempotent)."""
    for name, (ours, _) in _ROUTES.items():
        setattr(call, name, ours)


def uninstall() -> None:
    for name, (_, lightnings) in _ROUTES.items():
        setattr(call, name, lightnings)
