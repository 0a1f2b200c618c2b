"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_launch(args: argparse.Namespace) -> int:
    raise NotImplementedError("launch")

