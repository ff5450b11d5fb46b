"""The memory-processing methods ``bench`` can run, by suite name.

A method is one module under this package implementing the four steps of :mod:`bench.pipeline` and the
:class:`~bench.workload.Workload` that places them in inference. Every module here is scanned for concrete
workload classes with a ``name``, so adding a method means adding its module, a test and a suite; nothing
else changes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from bench.errors import UsageError, did_you_mean
from bench.workload import Workload


def _discover() -> dict[str, type[Workload]]:
    found: dict[str, type[Workload]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Workload) and not inspect.isabstract(obj)
                    and obj.__module__ == module.__name__ and getattr(obj, "name", None)):
                if obj.name in found:
                    raise RuntimeError(f"two workloads named {obj.name!r}: {found[obj.name]} and {obj}")
                found[obj.name] = obj
    return found


METHODS: dict[str, type[Workload]] = _discover()


def get_method(name: str) -> type[Workload]:
    """The workload class registered under ``name``; UsageError with a did-you-mean otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown method '{name}'; {did_you_mean(name, METHODS)}known: "
                         f"{', '.join(sorted(METHODS))}") from None
