"""Data in and out: image files, WebDataset shards, the streaming loaders, the smoke set and the ab prior.

- ``images``: decoding uploads and files safely, encoding results.
- ``shards``: image folders to WebDataset tar shards (``python -m colorray.shards``).
- ``loader``: shard sets and the DataLoaders that stream them into training workers.
- ``smoke``: the embedded smoke dataset built from scikit-image's photos.
- ``storage``: local paths and s3:// / gs:// URIs through pyarrow filesystems (runs, shards, exports).
- ``prior``: the empirical ab prior for class rebalancing (``python -m colorray.prior``).
"""
