"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_pareto_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_pareto(args: argparse.Namespace) -> int:
    raise NotImplementedError("pareto")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_report(args: argparse.Namespace) -> int:
    raise NotImplementedError("report")

