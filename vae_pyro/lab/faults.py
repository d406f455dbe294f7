"""Failpoints, for the fault tests: with ``VAE_PYRO_FAILPOINT=name:n`` in the environment the
process SIGKILLs itself the n-th time it passes ``hit(name)`` ("step": after a training step;
"checkpoint": halfway through writing a checkpoint); with ``VAE_PYRO_FAILPOINT_SIGNAL=USR2`` (any
signal's name) it sends itself that signal instead, as SLURM does before a job's time limit. With
``VAE_PYRO_FAILPOINT_ONCE=path`` too, only the first process to get there does it, leaving ``path``
behind (a retried task then runs through). Unset, ``hit`` returns at once."""

import os
import signal
from pathlib import Path

_TARGET = os.environ.get("VAE_PYRO_FAILPOINT")
_NAME, _COUNT = (_TARGET.rsplit(":", 1)[0], int(_TARGET.rsplit(":", 1)[1])) if _TARGET else (None, 0)
_ONCE = os.environ.get("VAE_PYRO_FAILPOINT_ONCE")
_SIGNAL = signal.Signals[f"SIG{os.environ.get('VAE_PYRO_FAILPOINT_SIGNAL', 'KILL')}"]
_hits = 0


def hit(name: str) -> None:
    global _hits
    if name != _NAME:
        return
    _hits += 1
    if _hits == _COUNT:
        if _ONCE is not None:
            try:
                Path(_ONCE).touch(exist_ok=False)
            except FileExistsError:
                return
        os.kill(os.getpid(), _SIGNAL)
