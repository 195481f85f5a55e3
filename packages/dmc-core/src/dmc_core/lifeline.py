"""A stage started by DVC ends when DVC ends: no orphan keeps writing outputs.

DVC runs a stage's command through `$SHELL -c`. When `dvc repro` is killed (SIGKILL, a closed
terminal, a CI timeout), its child is not told: the stage would go on alone, writing into
outputs that the next `dvc repro` is about to delete or re-create. So a stage that finds itself
under DVC (DVC sets `DVC_STAGE` for every command) asks the kernel to kill it when its parent
dies (Linux `PR_SET_PDEATHSIG`: bash execs a lone command, so the parent is DVC itself), and
watches the chain of its ancestors up to DVC, which also covers shells that stay in between
(dash): once a link of it is gone, the stage exits at once. Its snapshots make that safe.

DVC is the first ancestor without `DVC_STAGE` in its environment (a shell in between inherited
it). The chain stops there: DVC's own parent may end while DVC goes on (`nohup dvc repro &`
from a shell that then exits), and that must not stop the stage.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from pathlib import Path

__all__ = ["die_with_dvc"]

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5
_MAX_SHELLS_BETWEEN = 3


def die_with_dvc(environ: dict[str, str] | None = None) -> bool:
    """Tie this process's life to the DVC process that started it; False if not under DVC."""
    if "DVC_STAGE" not in (os.environ if environ is None else environ):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    chain = _ancestors()
    if chain[0] == 1:  # DVC died before this process could tie itself to it
        os.kill(os.getpid(), signal.SIGKILL)
    watcher = threading.Thread(target=_watch, args=(chain,), name="die-with-dvc", daemon=True)
    watcher.start()
    return True


def _ancestors(length: int | None = None) -> tuple[int | None, ...]:
    """The first `length` ancestors, parent first; by default from the parent up to DVC."""
    chain: list[int | None] = [os.getppid()]
    while _short_of(chain, length):
        chain.append(_parent_of(chain[-1]))
    return tuple(chain)


def _short_of(chain: list[int | None], length: int | None) -> bool:
    """Whether the chain needs its next ancestor: fewer than `length`, or by default while the
    newest one is a shell that inherited `DVC_STAGE` (so not yet DVC)."""
    if length is not None:
        return len(chain) < length
    return len(chain) <= _MAX_SHELLS_BETWEEN and _inherited_dvc_stage(chain[-1])


def _proc_file(pid: int | None, name: str) -> bytes | None:
    """`/proc/<pid>/<name>`, or None where the process or /proc cannot be read."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _inherited_dvc_stage(pid: int | None) -> bool:
    """Whether `pid` runs with `DVC_STAGE` set: a shell between DVC and the stage, not DVC."""
    environ = _proc_file(pid, "environ") or b""
    return any(entry.startswith(b"DVC_STAGE=") for entry in environ.split(b"\0"))


def _parent_of(pid: int | None) -> int | None:
    """The parent of `pid` from /proc (None where /proc is not readable)."""
    stat = _proc_file(pid, "stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces; the parent id follows its closing ')'.
    return int(stat.rsplit(b")", 1)[1].split()[1])


def _watch(chain: tuple[int | None, ...]) -> None:
    while True:
        time.sleep(_POLL_SECONDS)
        if _ancestors(len(chain)) != chain:
            log.error("the DVC process that started this stage is gone; stopping")
            os.kill(os.getpid(), signal.SIGKILL)
