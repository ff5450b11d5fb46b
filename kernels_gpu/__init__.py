"""GPU kernels for the memory-processing steps: Triton on CUDA, a framework-native torch path everywhere.

Each module holds one kernel family: an exact torch reference (for tests), the framework-native torch
path (the ``baseline-torch`` placement, and the fallback on CPU) and the Triton kernel (the optimized
``baseline`` placement). ``bench_cases()`` in each module feeds the roofline benchmark.
"""
