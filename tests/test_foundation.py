"""The installed environment and the CLI surface."""

import importlib
import subprocess
import sys

import pytest

from search.cli import COMMANDS, main


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


def test_help_does_not_import_the_heavy_stack() -> None:
    """`peftsweep --help` builds every subcommand's parser; none of that may import torch or Ray."""
    code = (
        "import sys, search.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('torch', 'ray', 'optuna', 'triton', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_package_names_resolve() -> None:
    import kernels
    import models.peft

    assert kernels.LoRALinear.__module__ == "kernels.lora"
    assert models.peft.apply_method.__module__ == "models.peft.registry"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = models.peft.nope  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 2


def test_unknown_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2  # argparse errors end like every bad input
    assert capsys.readouterr().err.startswith("peftsweep: error: COMMAND: invalid choice: 'no-such-command'")
