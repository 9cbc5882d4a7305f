"""Quick local start of the colorization service: ``python -m colorray.serve --model PATH``.

Checks the model and the port, then reaches Ray through ``colorray.cli.connect_ray``
(the cluster ``RAY_ADDRESS`` names, else a local Ray stopped again on exit),
starts Serve's HTTP proxy on ``--host``/``--port`` (127.0.0.1:8000 by default),
deploys ``colorray.serve.app`` as the application ``colorray`` and blocks until
Ctrl-C or SIGTERM; on a joined cluster it then deletes only that application.
A Serve already running on a joined cluster keeps its proxy where it is: without
``--port`` the service uses that proxy, and a ``--port`` that differs is refused
with the proxy's address (a running proxy cannot move). For lasting deployments
use ``serve deploy serve/config.yaml``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading

from colorray import cli
from colorray.data.images import DEFAULT_MAX_PIXELS
from colorray.export import ExportError, read_export
from colorray.serve.app import (
    DEFAULT_MAX_BYTES,
    ServeSettings,
    SettingsError,
    build_app,
)

APP_NAME = "colorray"
DEFAULT_PORT = 8000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m colorray.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="export file, Tune best/ folder, checkpoint or run folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=None,
                        help=f"default: {DEFAULT_PORT}, or the port of a Serve already running on a joined cluster")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.01)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica (torch threads)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per replica")
    parser.add_argument("--verbose", action="store_true", help="print Ray's and Serve's own logs and the replicas' lines")
    return parser.parse_args(argv)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise SettingsError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def settings_from(args: argparse.Namespace) -> ServeSettings:
    settings = ServeSettings.from_args(
        {
            "model": args.model,
            "device": args.device,
            "max_batch_size": args.max_batch_size,
            "batch_wait_timeout_s": args.batch_wait_timeout_s,
            "max_pixels": args.max_pixels,
            "max_bytes": args.max_bytes,
        }
    )
    if args.replicas < 1:
        raise SettingsError(f"--replicas must be >= 1, got {args.replicas}")
    read_export(settings.model)
    if not os.environ.get("RAY_ADDRESS"):  # a joined cluster's Serve may hold the port: checked once joined
        check_port_free(args.host, args.port or DEFAULT_PORT)
    return settings


def http_port(host: str, asked: int | None) -> int:
    """Start Serve's HTTP proxy on ``host:asked``, or take the proxy a Serve on the cluster already runs."""
    from ray import serve
    from ray.serve.context import _get_global_client

    running = _get_global_client(raise_if_no_controller_running=False)
    if running is None:
        port = asked or DEFAULT_PORT
        if os.environ.get("RAY_ADDRESS"):
            check_port_free(host, port)
        serve.start(http_options={"host": host, "port": port})
        return port
    proxy = running.http_config
    if asked is not None and asked != proxy.port:
        raise SettingsError(
            f"Serve already runs on this Ray cluster with its HTTP proxy on {proxy.host}:{proxy.port}, and a "
            f"running proxy cannot move to port {asked}: pass --port {proxy.port}, or stop Serve first (serve shutdown)"
        )
    return proxy.port


def wait_for_stop_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def serve_until_stopped(args: argparse.Namespace, settings: ServeSettings) -> None:
    """Deploy, wait for a stop signal, then remove what this command started."""
    import ray
    from ray import serve

    started_ray = cli.connect_ray(log_to_driver=args.verbose, verbose=args.verbose)
    deployed = False
    try:
        port = http_port(args.host, args.port)
        application = build_app(
            settings,
            num_replicas=args.replicas,
            ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        )
        serve.run(application, name=APP_NAME, route_prefix="/")
        deployed = True
        print(f"colorray is serving {settings.model} at http://{args.host}:{port}/ (Ctrl-C to stop)", flush=True)
        wait_for_stop_signal()
    finally:
        if started_ray:
            ray.shutdown()
        elif deployed:
            serve.delete(APP_NAME)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
        serve_until_stopped(args, settings)
    except (SettingsError, ExportError, ConnectionError) as error:
        return cli.fail(error)
    except RuntimeError as error:
        return cli.fail(error, code=1)
    return 0
