"""The command line shared by every package: `python -m dmc_<pkg> <verb> --paths...`.

A package lists its stages as `Stage` objects and calls `run_cli`. A verb's name is the DVC
stage's name and its `params.yaml` section; paths arrive as flags (they are wiring and live in
`dvc.yaml`), knobs come from the params file. Input errors (`DmcError`) end the run with one line
on stderr and exit status 2; anything else is a bug and keeps its traceback.
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

__all__ = ["Arg", "Stage", "run_cli"]

EXIT_INPUT_ERROR = 2


@dataclass(frozen=True)
class Arg:
    """A command-line flag of a stage: a path (wiring from `dvc.yaml`) or a name."""

    flag: str
    help: str
    required: bool = True
    output: bool = False  # a path the stage writes: stale temporaries of it are removed first


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


def build_parser(prog: str, stages: Sequence[Stage]) -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per stage."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Pipeline stages of {prog}.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for stage in stages:
        verb = sub.add_parser(stage.name, help=stage.summary, description=stage.summary)
        for arg in stage.args:
            verb.add_argument(arg.flag, required=arg.required, help=arg.help)
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
    return parser


def run_cli(prog: str, stages: Sequence[Stage], argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, load the chosen stage's config and run it; return the exit status."""
    parser = build_parser(prog, stages)
    args = parser.parse_args(argv)
    if args.verb is None:
        names = ", ".join(s.name for s in stages) or "none yet"
        parser.print_usage(sys.stderr)
        print(f"{prog}: choose a stage verb (stages: {names})", file=sys.stderr)
        return EXIT_INPUT_ERROR
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stage = next(s for s in stages if s.name == args.verb)
    die_with_dvc()
    for arg in stage.args:
        value = getattr(args, arg.flag.lstrip("-").replace("-", "_"))
        if arg.output and value:
            for stale in remove_stale_temporaries(value):
                logging.getLogger(prog).info("removed a stale temporary file %s", stale)
    try:
        config = load_stage_config(stage.schema, stage.name, args.params, args.overrides)
        stage.run(config, args)
    except DmcError as err:
        print(f"{prog} {stage.name}: error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0
