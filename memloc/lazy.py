"""Heavy libraries imported on first use, so that a command with nothing heavy to do answers at once.

torch, torchvision and pandas take seconds to import (4 s on a quiet machine, 13-17 s on a
loaded one), yet `python -m precompute --help`, `list` and every configuration error need none
of them. The settings of each part of memloc live with its compute (`memloc.settings`), so
checking a configuration imports the analysis modules; those modules, and the run store,
therefore bind the heavy libraries with `lazy` instead of `import`:

    torch = lazy("torch")                # instead of `import torch`
    nn = lazy("torch.nn")                # instead of `from torch import nn`
    F = lazy("torch.nn.functional")      # instead of `import torch.nn.functional as F`

The name is bound to a stand-in module. Its first attribute read (`torch.zeros`) imports the
library and puts the real module in the stand-in's place in the namespace that called `lazy`,
so every later use is an ordinary module access, at no cost. Nothing else changes: the
functions read `torch.zeros` as before, and `'torch' in sys.modules` stays false until one of
them runs.

A module that binds torch this way must not use it while it is imported: no
`class X(nn.Module)` (the zoo's architectures import torch; `models.build` imports them when a
model is built), no module-level constants of torch types, and `@no_grad` (below) instead of
`@torch.no_grad()`, whose decorator is made when the function is defined.
`tests/reliability/test_light_start.py` checks that `--help`, `list` and configuration errors
import no heavy library.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from typing import Any, Callable


class _Lazy(types.ModuleType):
    """Stands for module `__name__` in a namespace until an attribute of it is first read."""

    def __init__(self, name: str, namespace: dict[str, Any]):
        super().__init__(name)
        self._lazy_namespace = namespace

    def __getattr__(self, attr: str) -> Any:  # only called for what a bare module does not have
        module = importlib.import_module(self.__name__)
        namespace = self.__dict__["_lazy_namespace"]
        for key, value in list(namespace.items()):
            if value is self:
                namespace[key] = module
        return getattr(module, attr)

    def __reduce__(self):  # pickled as the module it stands for
        return importlib.import_module, (self.__name__,)


def lazy(name: str) -> types.ModuleType:
    """Module `name` (dotted names too), imported when an attribute of it is first read, and
    then bound in the caller's namespace in place of what this returns."""
    return _Lazy(name, sys._getframe(1).f_globals)


def no_grad(fn: Callable) -> Callable:
    """`@torch.no_grad()` for a module that binds torch with `lazy`: enters `torch.no_grad()`
    on each call instead of importing torch when the function is defined."""

    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)

    return without_grad


torch = lazy("torch")

__all__ = ["lazy", "no_grad"]
