"""The memory-processing methods ``bench`` can run, by suite name.

A method is one module under this package implementing the four steps of :mod:`bench.pipeline` and the
:class:`~bench.workload.Workload` that places them in inference; adding one means writing that module, one
entry in :data:`METHODS`, a test and a suite.
"""

from __future__ import annotations

import difflib

from bench.errors import UsageError
from bench.methods.seer_attention import SeerAttentionWorkload
from bench.workload import Workload

METHODS: dict[str, type[Workload]] = {w.name: w for w in (SeerAttentionWorkload,)}


def get_method(name: str) -> type[Workload]:
    """The method class registered under ``name``; UsageError with a did-you-mean otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"unknown method '{name}'; {hint}known: {', '.join(sorted(METHODS))}") from None
