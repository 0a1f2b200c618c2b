"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_select_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_select(args: argparse.Namespace) -> int:
    raise NotImplementedError("select")

