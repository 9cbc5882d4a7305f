"""Hyperparameter sweeps on Ray Tune: ``python -m colorray.tune SWEEP.yaml``.

- ``sweep``: the sweep file's schema, its checks and its Ray Tune search space.
- ``driver``: the command line, the trials (each a Ray Train run) and the results.
"""
