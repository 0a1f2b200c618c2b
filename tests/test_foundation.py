"""The installed environment and the CLI surface."""

import importlib
import subprocess
import sys

import pytest

from search.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize(
    "module", ["detectron2", "ray", "optuna", "peft", "pyarrow", "wandb", "triton", "torch", "pycocotools"]
)
def test_dependency_imports(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("package", ["search", "models", "kernels"])
def test_project_packages_import(package: str) -> None:
    importlib.import_module(package)


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "search.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 2


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["no-such-command"])
    assert exc.value.code == 2
