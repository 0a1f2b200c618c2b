"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_data(args: argparse.Namespace) -> int:
    raise NotImplementedError("data")


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_pretrain(args: argparse.Namespace) -> int:
    raise NotImplementedError("pretrain")

