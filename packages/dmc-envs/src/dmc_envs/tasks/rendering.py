"""Offscreen rendering of the MuJoCo tasks (locomotion, MetaWorld) without a display.

MuJoCo renders offscreen through EGL here (`MUJOCO_GL=egl`; osmesa and glfw do not work without
a display). gymnasium's MuJoCo renderer reads `MUJOCO_GL` when it makes its first GL context, at
the first `render()`, not when `mujoco` is imported, so setting it just before a rendering env
is built works even after the tasks imported `mujoco`.
"""

from __future__ import annotations

import functools
import importlib
import os

__all__ = ["OFFSCREEN_GL", "RenderUnavailableError", "use_offscreen_gl"]

#: The GL backend MuJoCo renders with unless the user chose one (`MUJOCO_GL`).
OFFSCREEN_GL = "egl"
#: The backends gymnasium's MuJoCo renderer knows (its `_ALL_RENDERERS`).
_BACKENDS = ("egl", "glfw", "osmesa")


class RenderUnavailableError(RuntimeError):
    """A task's env cannot render here (no working GL backend, e.g. no EGL)."""


def use_offscreen_gl() -> None:
    """Make MuJoCo render offscreen: `MUJOCO_GL=egl` unless it names a backend already.

    Raises:
        RenderUnavailableError: the backend is unknown or cannot make a GL context here.
    """
    os.environ.setdefault("MUJOCO_GL", OFFSCREEN_GL)
    backend = os.environ["MUJOCO_GL"]
    if backend not in _BACKENDS:
        raise RenderUnavailableError(f"MUJOCO_GL is '{backend}'; MuJoCo renders with {_BACKENDS}")
    problem = _context_error(backend)
    if problem:
        raise RenderUnavailableError(f"MUJOCO_GL={backend} cannot render here: {problem}")


@functools.cache
def _context_error(backend: str) -> str:
    """Why `backend` cannot make a GL context here ('' if it can): a tiny context, freed."""
    try:
        context = importlib.import_module(f"mujoco.{backend}").GLContext(8, 8)
        context.free()
    except Exception as err:  # a missing library or device fails with its own error types
        return f"{type(err).__name__}: {err}"
    return ""
