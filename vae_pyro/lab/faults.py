"""Failpoints, for the fault tests: with ``VAE_PYRO_FAILPOINT=name:n`` in the environment the
process SIGKILLs itself the n-th time it passes ``hit(name)`` ("step": after a training step;
"checkpoint": halfway through writing a checkpoint). Unset, ``hit`` returns at once."""

import os
import signal

_TARGET = os.environ.get("VAE_PYRO_FAILPOINT")
_NAME, _COUNT = (_TARGET.rsplit(":", 1)[0], int(_TARGET.rsplit(":", 1)[1])) if _TARGET else (None, 0)
_hits = 0


def hit(name: str) -> None:
    global _hits
    if name != _NAME:
        return
    _hits += 1
    if _hits == _COUNT:
        os.kill(os.getpid(), signal.SIGKILL)
