"""The command line shared by every package: `python -m dmc_<pkg> <verb> --paths...`.

A package lists its stages as `Stage` objects and calls `run_cli`. A verb's name is the DVC
stage's name and its `params.yaml` section; paths arrive as flags (they are wiring and live in
`dvc.yaml`), knobs come from the params file. Input errors (`DmcError`) end the run with one line
on stderr and exit status 2; anything else is a bug and keeps its traceback.

A verb outside the pipeline (a tool a user runs by hand, with no params section and no DVC
stage) is a `Command`: its flags are all it takes, and it fails the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dmc_core.atomic import remove_stale_temporaries
from dmc_core.config import load_stage_config
from dmc_core.errors import DmcError
from dmc_core.lifeline import die_with_dvc

__all__ = ["Arg", "Command", "Stage", "run_cli"]

EXIT_INPUT_ERROR = 2


@dataclass(frozen=True)
class Arg:
    """A command-line flag of a stage: a path (wiring from `dvc.yaml`) or a name; or, for a
    `Command`, its positional arguments (`many`: a name without dashes, any number of values)."""

    flag: str
    help: str
    required: bool = True
    output: bool = False  # a path the stage writes: stale temporaries of it are removed first
    switch: bool = False  # a yes/no flag without a value (off unless given), e.g. --force
    many: bool = False  # positional values, e.g. files (at least one if required)


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: its verb (= DVC stage = params section), schema, flags and body.

    `run(config, args)` receives the validated frozen config and the parsed flags.
    """

    name: str
    summary: str
    schema: type[Any]
    args: tuple[Arg, ...]
    run: Callable[[Any, argparse.Namespace], None]


@dataclass(frozen=True)
class Command:
    """A verb outside the pipeline: no params section is read; `run(args)` gets the flags."""

    name: str
    summary: str
    args: tuple[Arg, ...]
    run: Callable[[argparse.Namespace], None]


def build_parser(
    prog: str, stages: Sequence[Stage], commands: Sequence[Command] = ()
) -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per stage and per command."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Pipeline stages of {prog}.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for stage in stages:
        verb = sub.add_parser(stage.name, help=stage.summary, description=stage.summary)
        _add_args(verb, stage.args)
        verb.add_argument(
            "--params", default="params.yaml", help="params file (default: %(default)s)"
        )
        verb.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"override a params key, e.g. {stage.name}.<key>=<value> (repeatable)",
        )
    for command in commands:
        verb = sub.add_parser(command.name, help=command.summary, description=command.summary)
        _add_args(verb, command.args)
    return parser


def run_cli(
    prog: str,
    stages: Sequence[Stage],
    argv: Sequence[str] | None = None,
    commands: Sequence[Command] = (),
) -> int:
    """Parse `argv`, load the chosen stage's config and run it (or run the chosen command);
    return the exit status."""
    parser = build_parser(prog, stages, commands)
    args = parser.parse_args(argv)
    if args.verb is None:
        names = ", ".join(s.name for s in stages) or "none yet"
        others = f"; other verbs: {', '.join(c.name for c in commands)}" if commands else ""
        parser.print_usage(sys.stderr)
        print(f"{prog}: choose a stage verb (stages: {names}{others})", file=sys.stderr)
        return EXIT_INPUT_ERROR
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    verb = next(v for v in (*stages, *commands) if v.name == args.verb)
    die_with_dvc()
    for arg in verb.args:
        value = getattr(args, arg.flag.lstrip("-").replace("-", "_"))
        if arg.output and value:
            for stale in remove_stale_temporaries(value):
                logging.getLogger(prog).info("removed a stale temporary file %s", stale)
    try:
        if isinstance(verb, Command):
            verb.run(args)
        else:
            config = load_stage_config(verb.schema, verb.name, args.params, args.overrides)
            verb.run(config, args)
    except DmcError as err:
        print(f"{prog} {verb.name}: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0


def _add_args(verb: argparse.ArgumentParser, args: Sequence[Arg]) -> None:
    """A verb's own flags: values (required unless said), switches and positional values."""
    for arg in args:
        if arg.switch:
            verb.add_argument(arg.flag, action="store_true", help=arg.help)
        elif arg.many:  # a repeated flag adds up: --set a --set b
            action = "extend" if arg.flag.startswith("-") else "store"
            nargs = "+" if arg.required else "*"
            verb.add_argument(arg.flag, nargs=nargs, action=action, help=arg.help)
        else:
            verb.add_argument(arg.flag, required=arg.required, help=arg.help)
