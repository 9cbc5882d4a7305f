"""colorray: distributed training, tuning and serving of image colorization models on Ray.

Entry points (each ``python -m colorray.NAME``): ``shards`` (image folders to WebDataset
shards), ``prior`` (the empirical ab prior), ``train`` (Ray Train), ``tune`` (Ray Tune),
``serve`` and ``client`` (Ray Serve), ``evaluate`` (metric tables) and ``colorize``.
"""

__version__ = "0.1.0"
