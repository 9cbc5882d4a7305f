"""Human judgement of colorizations: a rating page, votes in a real database, honest statistics.

``python -m colorray.judge serve --items DIR_OR_MANIFEST --task pairwise|real_or_fake|grade``
serves the page; ``python -m colorray.judge results`` prints the statistics.
Modules: ``tasks`` (the vocabulary), ``items`` (study items from output folders
or a manifest), ``store`` (the votes table, SQLAlchemy Core), ``stats`` (pure
statistics), ``results`` (tables of them), ``app`` (the FastAPI app),
``static/judge.html`` (the page). See ``docs/judge.md``.
"""
