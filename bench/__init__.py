"""Benchmarks and checks, not run by the tests: each is a module run from the repository root, e.g.
``python -m bench.anomaly_ablation --help``, so that it imports ``inspectkit`` as the root scripts do and reads its
flags through ``inspectkit.cli``. anomalib_side.py and timm_weights.py are the exception: they run as files under
anomalib's own virtualenv (see anomaly_bench.py), which does not hold inspectkit's dependencies."""
