"""Every command's argument parsing, in this process: one ``error: ...`` line and status 2 for bad arguments."""

from __future__ import annotations

import importlib
import socket

import pytest

from colorray import cli

COMMANDS = {
    "train": "colorray.train.driver",
    "tune": "colorray.tune.driver",
    "serve": "colorray.serve.launch",
    "evaluate": "colorray.evaluate.harness",
    "colorize": "colorray.colorize",
    "shards": "colorray.data.shards",
    "prior": "colorray.data.prior",
    "client": "colorray.serve.client",
    "study": "colorray.study.runner",
    "judge": "colorray.judge.__main__",
}


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(module).main(argv)
    return stopped.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_options_give_one_error_line_and_status_2(command, capsys):
    code, err = run_main(COMMANDS[command], ["--no-such-option", "x"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert f"see python -m colorray.{command} --help" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_the_command_and_exits_0(command, capsys):
    with pytest.raises(SystemExit) as stopped:
        importlib.import_module(COMMANDS[command]).main(["--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m colorray.{command}")


@pytest.mark.parametrize("value, message", [("99999", "port must be in 1..65535, got 99999"),
                                            ("0", "port must be in 1..65535, got 0"),
                                            ("http", "port must be an integer in 1..65535, got 'http'")])
def test_an_out_of_range_port_is_one_error_line(value, message, capsys, tmp_path):
    code, err = run_main("colorray.serve.launch", ["--model", str(tmp_path), "--port", value], capsys)
    assert code == 2 and err == f"error: argument --port: {message} (see python -m colorray.serve --help)\n"


def test_port_type_accepts_the_valid_range():
    assert cli.port("1") == 1 and cli.port("65535") == 65535


def test_fail_prints_the_first_line_of_an_error(capsys):
    assert cli.fail(ValueError("bad value\nmore detail")) == 2
    assert cli.fail(KeyError(), code=1) == 1
    assert capsys.readouterr().err == "error: bad value\nerror: KeyError\n"


def test_train_parses_config_resume_and_overrides():
    from colorray.train.driver import parse_args

    args = parse_args(["--config", "c.yaml", "model.name=unet", "--resume", "runs/x", "optim.lr=1e-4"])
    assert (args.config, args.resume, args.overrides) == ("c.yaml", "runs/x", ["model.name=unet", "optim.lr=1e-4"])


def test_tune_mixes_flags_and_overrides():
    from colorray.tune.driver import cli_overrides, parse_args

    args = parse_args(["sweep.yaml", "base.run.epochs=2", "--num-samples", "3", "scheduler.type=none"])
    assert cli_overrides(args) == ["base.run.epochs=2", "scheduler.type=none", "num_samples=3"]


def test_joining_a_cluster_outside_a_job_puts_this_colorray_first_on_the_workers_path_and_keeps_it_offline(monkeypatch):
    monkeypatch.delenv(cli.JOB_CONFIG_VARIABLE, raising=False)
    monkeypatch.delenv("COLORRAY_OFFLINE", raising=False)
    assert cli.runtime_env() == {"env_vars": {"PYTHONPATH": f"{cli.PACKAGE_ROOT}:${{PYTHONPATH}}"}}
    monkeypatch.setenv("COLORRAY_OFFLINE", "1")  # the driver's offline switch holds on the cluster's workers too
    assert cli.runtime_env()["env_vars"]["COLORRAY_OFFLINE"] == "1"
    assert importlib.import_module("colorray").__file__.startswith(cli.PACKAGE_ROOT)
    monkeypatch.setenv(cli.JOB_CONFIG_VARIABLE, "{}")
    assert cli.runtime_env() is None


def test_an_unreachable_ray_address_is_one_error_within_seconds(monkeypatch):
    """Ray retries a dead RAY_ADDRESS for minutes before giving up; colorray says so at once (without Ray)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: connections are refused
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(ConnectionError, match=rf"at RAY_ADDRESS={address} \(Connection refused\): is it running"):
            cli.connect_ray()  # the fast layer refuses Ray: the check itself answers, before ray.init
    for left_to_ray in ("", "auto", "ray://head:10001", "local"):
        cli.check_ray_address(left_to_ray)
