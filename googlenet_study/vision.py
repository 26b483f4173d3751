"""torchvision, imported without torch._dynamo: every module of the package imports torchvision from here.

Why: torchvision.ops.roi_align imports `torch._dynamo.utils` at import time for one function it calls only
under torch.compile, and `import torchvision` imports torchvision.ops. Loading torch._dynamo (sympy, the
FX tracer, FSDP) is 1.8 s of `import torchvision`'s 3.8 s on 2 cores (`python -X importtime`), paid by every
training run, sweep worker and test process, none of which compiles unless `compile: true`.

So while torchvision imports, `torch._dynamo` and `torch._dynamo.utils` are stand-ins that load the real
modules on first use: `is_compile_supported` when called, any other name when read. After the import the
stand-ins leave sys.modules, so `import torch._dynamo` (torch.compile) loads the real package, as always.
Where torchvision or torch._dynamo is loaded already, this is a plain import."""

from __future__ import annotations

import importlib
import sys
import types

_STANDS_IN = ("torch._dynamo", "torch._dynamo.utils")


def _is_stand_in(m) -> bool:
    return isinstance(m, types.ModuleType) and vars(m).get("_stand_in") is True


def _drop_stand_ins() -> None:
    for n in _STANDS_IN:
        if _is_stand_in(sys.modules.get(n)):
            del sys.modules[n]


def _real(name: str) -> types.ModuleType:
    """The real module `name`, once every stand-in has left sys.modules."""
    _drop_stand_ins()
    return importlib.import_module(name)


def _stand_in(name: str) -> types.ModuleType:
    m = types.ModuleType(name)
    m._stand_in = True
    m.__path__ = []  # a package, so `torch._dynamo.utils` can be found under it

    def __getattr__(attr: str):  # any other name: the real module's
        if attr.startswith("__"):  # inspect.getmodule reads __file__ of every module in sys.modules
            raise AttributeError(attr)
        return getattr(_real(name), attr)

    m.__getattr__ = __getattr__
    return m


def _import() -> types.ModuleType:
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        import torchvision
        return torchvision
    import torch  # noqa: F401 - first, and whole: the stand-ins go under its package

    dynamo, utils = (_stand_in(n) for n in _STANDS_IN)

    def is_compile_supported(device_type):  # roi_align's one use; runs only under torch.compile
        return _real("torch._dynamo.utils").is_compile_supported(device_type)

    utils.is_compile_supported = is_compile_supported
    dynamo.utils = utils
    sys.modules.update(zip(_STANDS_IN, (dynamo, utils)))
    try:
        import torchvision
    finally:
        _drop_stand_ins()
    return torchvision


torchvision = _import()
models = torchvision.models
