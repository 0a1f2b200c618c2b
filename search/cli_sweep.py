"""Placeholder: replaced by the issue that owns these commands."""

import argparse

def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_run(args: argparse.Namespace) -> int:
    raise NotImplementedError("run")


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_resume(args: argparse.Namespace) -> int:
    raise NotImplementedError("resume")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run_demo(args: argparse.Namespace) -> int:
    raise NotImplementedError("demo")

