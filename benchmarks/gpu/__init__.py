"""The sections of ``benchmarks/gpu_check.py``, the one prepared check for a GPU machine.

``core``: the context every section gets, the outcome it returns and the orchestrator (a section
that raises is reported as failed and the others still run); ``report``: the Markdown and JSON
reports; ``bundle``: the dependencies a bare GPU machine lacks, from the bundle that
``benchmarks/gpu_wheels.py`` builds; ``shapes``: the paper's configuration and the smoke run's tiny
one; one module per section: ``throughput``, ``correctness``, ``loader``, ``e2e``.
"""
