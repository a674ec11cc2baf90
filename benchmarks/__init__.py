"""aiotimer's benchmark suite: ``python -m benchmarks [WORKLOAD ...] [--quick] [--out DIR]``.

Not part of the installed package. See ``benchmarks/__main__.py`` for the workloads.
"""
