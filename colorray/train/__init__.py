"""Training on Ray Train: ``python -m colorray.train``.

- ``driver``: the command line, the checks before any worker starts and the ``TorchTrainer``.
- ``loop``: ``train_loop_per_worker`` and ``train_step``, what each worker runs.
- ``preflight``: config checks that fail fast, before Ray is involved.
- ``checkpoints``: checkpoints, the run folder and what it holds.
- ``optim``: optimizers and learning-rate schedules.
- ``stepping``: mixed precision, gradient accumulation, clipping and the generator's EMA.
- ``validation``: per-epoch validation metrics and sample grids inside the workers.
"""
