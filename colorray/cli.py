"""What every colorray command line shares: its parser, one-line errors, and the way it reaches Ray.

- ``ArgumentParser``: argparse whose bad arguments print one ``error: ...`` line (status 2);
  every command (``python -m colorray.*`` and the ``bench/`` scripts) builds its parser here.
- ``port``: the argparse type of every ``--port`` (1..65535, else a one-line error).
- ``fail``: print an error's first line as ``error: ...`` and return the exit status.
- ``connect_ray``: the one way a command reaches Ray: join the running cluster, else start one here.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by `ray job submit` for its entry point
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument prints a single ``error: ...`` line and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def port(text: str) -> int:
    """argparse type of a TCP port: an integer in 1..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, got '{text}'") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {value}")
    return value


def fail(error: object, code: int = 2) -> int:
    """Print the first line of ``error`` as ``error: ...`` on stderr; return the exit status."""
    text = str(error).strip()
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return code


def runtime_env() -> dict | None:
    """The runtime env of a driver that joins a cluster: workers import the driver's colorray when they can.

    ``PACKAGE_ROOT`` goes first on the workers' ``PYTHONPATH`` (a path missing on a
    node is skipped by Python), and the storage settings set here (S3 endpoint,
    region, credentials: ``colorray.data.storage.runtime_env``) and the weights
    settings (``COLORRAY_OFFLINE``, ``COLORRAY_WEIGHTS_URL``) go along. Inside
    ``ray job submit`` the job's own runtime env (``--working-dir``,
    ``--runtime-env``) applies, and None is returned.
    """
    if JOB_CONFIG_VARIABLE in os.environ:
        return None
    from colorray.data import storage
    from colorray.models.weights import MIRROR_ENV, OFFLINE_ENV

    env_vars = storage.runtime_env().get("env_vars", {})
    env_vars.update({name: os.environ[name] for name in (OFFLINE_ENV, MIRROR_ENV) if name in os.environ})
    return {"env_vars": {**env_vars, "PYTHONPATH": f"{PACKAGE_ROOT}{os.pathsep}${{PYTHONPATH}}"}}


def connect_ray(*, log_to_driver: bool = True, num_cpus: int | None = None, verbose: bool = False) -> bool:
    """Reach Ray; True when this call started a local Ray (the caller then owns its shutdown).

    Already connected: nothing to do. Else join the running cluster: the one
    ``RAY_ADDRESS`` names (``ray job submit`` sets it for its entry point) or a
    ``ray start`` cluster on this machine. Without one, start Ray here with its
    dashboard on 127.0.0.1 (Ray Train runs slower without it), using
    ``num_cpus`` CPUs (default: all). An unreachable ``RAY_ADDRESS`` raises
    ``ConnectionError`` instead of quietly starting another Ray. Ray's start-up
    banners (INFO logs) show only when ``verbose``; ``log_to_driver=False`` keeps
    the workers' lines (also in each run's logs) off this console.
    """
    import ray

    from colorray.train.console import ray_log_level

    if ray.is_initialized():
        return False
    check_ray_address(os.environ.get("RAY_ADDRESS", ""))
    try:
        ray.init(address="auto", log_to_driver=log_to_driver, runtime_env=runtime_env(),
                 logging_level=ray_log_level(verbose))
        return False
    except ConnectionError:
        if os.environ.get("RAY_ADDRESS"):
            raise ConnectionError(f"cannot reach the Ray cluster at RAY_ADDRESS={os.environ['RAY_ADDRESS']}: "
                                  "is it running? (unset RAY_ADDRESS to start Ray on this machine)") from None
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=num_cpus, log_to_driver=log_to_driver,
             logging_level=ray_log_level(verbose))
    return True


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` RAY_ADDRESS that nothing listens on is a ConnectionError within seconds; Ray itself
    retries it for minutes. Other forms (empty, ``auto``, ``ray://``, ``local``) are left to Ray."""
    host, _, port_text = address.rpartition(":")
    if "://" in address or not host or not port_text.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({error.strerror or error}): "
                              "is it running? (unset RAY_ADDRESS to start Ray on this machine)") from None
