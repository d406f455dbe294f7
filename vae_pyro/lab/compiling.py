"""``--compile``: the model's networks and its hand-derived loss through ``torch.compile``, opt-in.

What is compiled is arithmetic only: every child network of the model (``nn.Module.compile``, in
place, so a checkpoint's keys do not change) and the model's ``hand_loss`` when it has one, which
fuses the reparameterised draw, the decoder and the log-likelihood into few kernels. Pyro's traces,
sites and estimators run as before around the compiled networks, so every estimator means the same.
Inductor builds its CPU kernels with a C++ compiler; without one the run says so in one line and
stays eager.
"""

import os
import shutil
import sys

import torch
from torch import nn

COMPILERS = ("g++", "c++", "clang++")


def cxx_found() -> bool:
    """Whether a C++ compiler is on PATH ($CXX first), as Inductor's CPU backend needs."""
    return any(shutil.which(c) for c in (os.environ.get("CXX", ""), *COMPILERS) if c)


def compile_model(module: nn.Module) -> bool:
    """Compile ``module``'s child networks in place and wrap its ``hand_loss``; True when done, False
    (with one line on stderr) when no C++ compiler is found and the module stays eager."""
    if not cxx_found():
        print(f"--compile: no C++ compiler found ($CXX or {', '.join(COMPILERS)}); running eager", file=sys.stderr)
        return False
    for child in module.children():
        child.compile()
    if callable(getattr(module, "hand_loss", None)):
        module.hand_loss = torch.compile(module.hand_loss)
    return True
