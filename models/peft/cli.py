"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_params(args: argparse.Namespace) -> int:
    raise NotImplementedError("params")


