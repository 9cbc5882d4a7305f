"""Command-line client of the colorization service: colorize files and folders over HTTP.

``python -m colorray.client IMG_OR_DIR... --url URL --out DIR [--concurrency N] [--format png|jpeg]``
uploads every image (folders are searched recursively for JPEG, PNG, WebP, BMP
and TIFF files) to ``URL/colorize`` with N requests in flight, shows a progress
bar, and writes the results under ``--out`` (a folder's images keep their
relative paths). Stdlib HTTP only: no torch import, quick to start.
Exit status: 0 all done, 1 some images refused by the server, 2 bad arguments
or no server.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from colorray import cli
from colorray.data.images import FORMAT_SUFFIXES, ImageJob, InputError, plan_outputs


class ClientError(Exception):
    """A bad argument or an unreachable server; the message says which."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m colorray.client", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files or folders of images")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service URL (default: http://127.0.0.1:8000)")
    parser.add_argument("--out", required=True, help="folder for the colorized images")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")
    parser.add_argument("--format", choices=sorted(FORMAT_SUFFIXES), default="png")
    parser.add_argument("--temperature", type=float, default=None, help="annealing temperature 0..1 (bins models)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default: 300)")
    return parser.parse_args(argv)


def check_server(url: str) -> None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise ClientError(f"cannot reach the colorray service at {url}: {reason}") from None


def colorize_url(url: str, fmt: str, temperature: float | None) -> str:
    query = {"format": fmt} if temperature is None else {"format": fmt, "temperature": temperature}
    return f"{url}/colorize?{urllib.parse.urlencode(query)}"


def server_error(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read())["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code} {error.reason}"


def colorize_one(upload: ImageJob, endpoint: str, timeout: float) -> str | None:
    """ImageJob one image and write the result; the server's error message on refusal, else None."""
    request = urllib.request.Request(endpoint, data=upload.source.read_bytes(), method="POST")
    request.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            result = response.read()
    except urllib.error.HTTPError as error:
        return server_error(error)
    except (urllib.error.URLError, OSError) as error:
        return f"request failed: {getattr(error, 'reason', error)}"
    upload.target.parent.mkdir(parents=True, exist_ok=True)
    upload.target.write_bytes(result)
    return None


def run(uploads: list[ImageJob], endpoint: str, concurrency: int, timeout: float) -> dict[Path, str]:
    """Colorize all uploads with ``concurrency`` requests in flight; failures by source path."""
    failures: dict[Path, str] = {}
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(uploads), unit="img", desc="colorize") as bar:
        futures = {pool.submit(colorize_one, upload, endpoint, timeout): upload for upload in uploads}
        for future in as_completed(futures):
            message = future.result()
            if message is not None:
                failures[futures[future].source] = message
            bar.update()
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = args.url.rstrip("/")
    try:
        if args.concurrency < 1:
            raise ClientError(f"--concurrency must be >= 1, got {args.concurrency}")
        uploads = plan_outputs(args.inputs, Path(args.out), args.format)
        check_server(url)
    except (ClientError, InputError) as error:
        return cli.fail(error)
    failures = run(uploads, colorize_url(url, args.format, args.temperature), args.concurrency, args.timeout)
    for source, message in sorted(failures.items()):
        print(f"error: {source}: {message}", file=sys.stderr)
    print(f"colorized {len(uploads) - len(failures)} of {len(uploads)} images into {args.out}")
    return 1 if failures else 0
