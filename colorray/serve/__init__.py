"""The colorization service on Ray Serve.

- ``app``: the Serve application (``import_path: colorray.serve.app:app``).
- ``launch``: quick local start, ``python -m colorray.serve --model PATH``.
- ``client``: the command-line HTTP client, ``python -m colorray.client``.
"""
