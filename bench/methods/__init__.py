"""The memory-processing methods ``bench`` can run, by suite name.

A method is one module under this package implementing the four steps of :mod:`bench.pipeline`; adding
one means writing that module, one line in :data:`METHODS`, a test and a suite.
"""

from __future__ import annotations

import difflib

from bench.errors import UsageError
from bench.methods.attention import SparseAttentionMethod
from bench.methods.seer_attention import SeerAttentionR

METHODS: dict[str, type[SparseAttentionMethod]] = {
    SeerAttentionR.name: SeerAttentionR,
}


def get_method(name: str) -> type[SparseAttentionMethod]:
    """The method class registered under ``name``; UsageError with a did-you-mean otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"unknown method '{name}'; {hint}known: {', '.join(sorted(METHODS))}") from None
