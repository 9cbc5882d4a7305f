"""The five source studies as runnable recipes: ``python -m colorray.study NAME --data SHARDS``.

``recipes.py`` reads a study's recipe (``recipes/NAME.yaml``: its rows, each a
set of TrainConfig sections, at a ``small`` and a ``full`` scale, and the
numbers the study published); ``runner.py`` trains every row as one trial of
one Ray Tune run, scores each trial's selected generator with the evaluation
harness and writes the study's table (``report.py``). See ``docs/studies.md``.
"""
