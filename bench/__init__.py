"""bench: does a GPU+FPGA system make long-context LLM inference faster and cheaper than a GPU alone?

The library behind the ``bench`` command. The four memory-processing steps live in
:mod:`bench.pipeline`, the methods in :mod:`bench.methods`, the devices in :mod:`bench.devices`,
the energy meters in :mod:`bench.meters`, the timeline in :mod:`bench.timeline`, the runner in
:mod:`bench.runner`, the result store in :mod:`bench.store` and the reports in :mod:`bench.report`.
"""

__version__ = "0.1.0"
