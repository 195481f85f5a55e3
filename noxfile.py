"""Test sessions: one per package (only it and its declared dependencies), integration, lint.

    nox                                  every default session (what CI runs)
    nox -s "tests(dmc-envs)"             one package
    nox -s smoke                         the end-to-end `dvc repro` on the smoke profile only

Every install passes `-c constraints.txt` and installs torch first, so torch stays the CPU build.
Sibling packages are installed from their folders, never from an index: a package named like
ours exists on PyPI, and an index must never stand in for a sibling.

Each session's virtualenv holds its own torch (about 1.5 GB in all). Locally they are kept and
reused; under CI (`CI` set, or `DMC_NOX_DISCARD_VENVS=1`) each is deleted as soon as its session
ends, so the suite never needs more than one session's worth of disk.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "integration"]
DISCARD_VENVS = os.environ.get("DMC_NOX_DISCARD_VENVS", "1" if os.environ.get("CI") else "0") == "1"


def discards_its_venv(body: Callable[..., None]) -> Callable[..., None]:
    """Delete the session's virtualenv when the session ends (passed or failed) if DISCARD_VENVS."""

    @wraps(body)
    def session_body(session: nox.Session, **kwargs: str) -> None:
        try:
            body(session, **kwargs)
        finally:
            location = getattr(session.virtualenv, "location", None)
            if DISCARD_VENVS and location and Path(location).is_dir():
                session.log(f"discarding the virtualenv {location}")
                shutil.rmtree(location, ignore_errors=True)

    return session_body


def sibling_closure(package: str) -> list[str]:
    """Return `package` and every sibling it depends on (transitively), dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        for requirement in meta["project"].get("dependencies", []):
            dep = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
            if dep in PACKAGES:
                visit(dep)
        order.append(name)

    visit(package)
    return order


#: Extras installed wherever the package is: dmc-envs with its task families' simulators, so
#: every session can build every registered task (the task contract runs over all of them).
EXTRAS = {"dmc-envs": ("mujoco", "minari", "behaviour", "metaworld", "pusht")}


def install(
    session: nox.Session,
    packages: list[str],
    *extra: str,
    editable: bool = False,
    tested: str | None = None,
) -> None:
    """Install torch first, then the given sibling packages (from their folders) and `extra`;
    the `tested` package comes with its `test` extra (what its own tests need)."""
    pip = ["-c", CONSTRAINTS]
    session.install(*pip, "torch==2.13.0")
    local: list[str] = []
    for name in packages:
        folder = f"packages/{name}[test]" if name == tested else f"packages/{name}"
        local += ["-e", folder] if editable else [folder]
        # The extras' requirements by name: pip's resolver does not match a sibling's plain
        # requirement (dmc-align -> dmc-envs) to an editable folder given with extras.
        extra = (*extra, *extra_requirements(name, EXTRAS.get(name, ())))
    session.install(*pip, *local, "pytest", *extra)


def extra_requirements(package: str, extras: tuple[str, ...]) -> list[str]:
    """What the package's `extras` require, from its pyproject.toml."""
    meta = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    optional = meta["project"].get("optional-dependencies", {})
    return [requirement for name in extras for requirement in optional[name]]


@nox.session(tags=["static"])
@discards_its_venv
def lint(session: nox.Session) -> None:
    """ruff: lint and format check of the whole tree."""
    session.install("-c", CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(tags=["unit"])
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
@discards_its_venv
def tests(session: nox.Session, package: str) -> None:
    """Unit tests of one package, with only that package and its declared dependencies."""
    install(session, sibling_closure(package), tested=package)
    session.run("pytest", f"packages/{package}/tests", *session.posargs)


@nox.session(tags=["integration"])
@discards_its_venv
def integration(session: nox.Session) -> None:
    """Cross-package contracts and the end-to-end `dvc repro`, with everything installed."""
    install(session, PACKAGES, "dvc", "vl-convert-python", editable=True)
    session.run("pytest", "tests", *session.posargs)


@nox.session(default=False, tags=["slow"])
@discards_its_venv
def smoke(session: nox.Session) -> None:
    """Only the end-to-end pipeline test (`dvc repro` on the smoke profile)."""
    install(session, PACKAGES, "dvc", editable=True)
    session.run("pytest", "tests", "-m", "slow", *session.posargs)


@nox.session(default=False, tags=["slow"])
@discards_its_venv
def faults(session: nox.Session) -> None:
    """Fault injection: SIGKILL `dvc repro` at random moments, rerun, compare (minutes)."""
    install(session, PACKAGES, "dvc", editable=True)
    session.run("python", "benchmarks/fault_injection.py", *session.posargs)
