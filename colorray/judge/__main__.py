"""Command line of human judgement studies: ``python -m colorray.judge serve|results``.

``serve --items DIR_OR_MANIFEST [--task pairwise|real_or_fake|grade] [--db URL]``
checks every image, opens (or creates) the votes database and serves the
rating page on 127.0.0.1 unless ``--host`` says otherwise, until Ctrl-C or
SIGTERM. ``results [--db URL] [--csv FILE]`` prints every system's measures.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from colorray import cli
from colorray.judge.app import JudgeSettings, create_app
from colorray.judge.items import ItemsError, open_study
from colorray.judge.results import study_rows, text_table, write_csv
from colorray.judge.store import DEFAULT_DB, StoreError, open_store
from colorray.judge.tasks import PAIRWISE, TASKS

TOKEN_ENV = "COLORRAY_JUDGE_TOKEN"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m colorray.judge", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the rating page and store the votes")
    serve.add_argument("--items", required=True,
                       help="folder with one subfolder per system plus truth/, or a manifest .json/.csv")
    serve.add_argument("--task", choices=TASKS, default=PAIRWISE, help="what raters are asked (default: pairwise)")
    serve.add_argument("--db", default=DEFAULT_DB, help=f"SQLAlchemy database URL (default: {DEFAULT_DB})")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=cli.port, default=8010, help="port to listen on (default: 8010)")
    serve.add_argument("--exposure-ms", type=positive_int, default=1000,
                       help="real_or_fake: milliseconds an image is shown before it is hidden (default: 1000)")
    serve.add_argument("--max-votes-per-second", type=positive_int, default=5,
                       help="per rater; faster votes get 429 (default: 5)")
    serve.add_argument("--admin-token", default=None,
                       help=f"enables GET /admin/export for this bearer token (default: ${TOKEN_ENV}; unset: off)")
    results = commands.add_parser("results", help="print preference, Bradley-Terry, fooled rate and grades")
    results.add_argument("--db", default=DEFAULT_DB, help=f"SQLAlchemy database URL (default: {DEFAULT_DB})")
    results.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV file")
    return p


def listening_socket(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return listener


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        study = open_study(Path(args.items), args.task)
        store = open_store(args.db)
        listener = listening_socket(args.host, args.port)
    except (ItemsError, StoreError, OSError) as error:
        return cli.fail(error)
    token = args.admin_token or os.environ.get(TOKEN_ENV) or None
    settings = JudgeSettings(args.exposure_ms, args.max_votes_per_second, token)
    port = listener.getsockname()[1]
    print(f"colorray judge: {study.task} study, {len(study.items)} items from {args.items}, votes in {store.name}")
    print(f"rate at http://{args.host}:{port}/ (admin export {'on' if token else 'off'}; Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(create_app(study, store, settings), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def results(args: argparse.Namespace) -> int:
    try:
        rows = study_rows(args.db)
        if args.csv:
            write_csv(rows, args.csv)
    except (StoreError, OSError) as error:
        return cli.fail(error)
    print(text_table(rows) if rows else "no votes yet")
    if args.csv:
        print(f"wrote {args.csv}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return serve(args) if args.command == "serve" else results(args)


if __name__ == "__main__":
    sys.exit(main())
