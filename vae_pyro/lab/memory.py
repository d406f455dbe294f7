"""Will a training step fit in memory? An estimate made before anything is allocated or written.

    bytes ≈ 4 · parameters · (weights, gradients, Adam's two moments)
          + batch · samples · (bytes autograd saves per image and sample for the backward pass)

The parameters are counted on PyTorch's ``meta`` device (no memory); the saved bytes are measured by
``torch.autograd.graph.saved_tensors_hooks`` during one step of the estimator at one sample per
image, on two and on four images: the slope is what each image adds (scaled to the batch and the
samples, as if all of it grew with the samples: an upper bound), the intercept what does not grow.
Evaluation needs no estimate: it draws in chunks of a fixed size (``evaluate.is_log_likelihood``).
"""

import os
from pathlib import Path

import pyro
import torch
from torch import nn

from vae_pyro import estimators
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import traces
from vae_pyro.lab.experiment import Data, build_model, instantiate, probe_batch

HEADROOM = 0.8  # refuse a step estimated to need more than this share of the memory available
GIB = 2**30
UNLIMITED = 2**60  # cgroup v1 writes a page-rounded 2**63 - 1 where no limit is set


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free memory, or the system's MemAvailable, or less where this
    process's cgroup sets a limit (``cgroup_room``)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        system = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    room = cgroup_room()
    return system if room is None else min(system, room)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" where no limit is set


def _inactive_file(folder: Path, key: str) -> int:
    """Page cache the kernel reclaims before it kills: memory.stat's inactive file pages (0 if unread)."""
    try:
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(stat.get(key, 0))


def cgroup_room(root: Path = Path("/")) -> int | None:
    """The memory this process's cgroups still leave it (what SLURM's --mem and container limits set), or
    None where no limit is set: the least of limit − (usage − inactive page cache) over its cgroup and
    every cgroup above it (SLURM sets the limit on the job, the process runs in a step below), with
    cgroup v2's memory.max and memory.current or v1's memory.limit_in_bytes and memory.usage_in_bytes.
    Inside a container the cgroup's own folder may be the mount's root."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            mount, files, inactive = root / "sys/fs/cgroup", ("memory.max", "memory.current"), "inactive_file"
        elif "memory" in controllers.split(","):
            mount = root / "sys/fs/cgroup/memory"
            files, inactive = ("memory.limit_in_bytes", "memory.usage_in_bytes"), "total_inactive_file"
        else:
            continue
        parts = Path(path.lstrip("/")).parts
        for folder in [mount.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)] + [mount]:
            limit, usage = (_read_int(folder / f) for f in files)
            if limit is not None and usage is not None and limit < UNLIMITED:
                rooms.append(max(0, limit - usage + _inactive_file(folder, inactive)))
    return min(rooms) if rooms else None


def parameter_bytes(build) -> int:
    """Bytes of the module ``build()`` makes, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() * p.element_size() for p in module.parameters())


def saved_bytes(module: nn.Module, estimator: estimators.Estimator, x: torch.Tensor, y: torch.Tensor | None) -> int:
    """Bytes autograd saves for the backward pass of one step of ``estimator`` on batch ``x``."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with pyro.get_param_store().scope(), traces.seeded_rng(0, x.device), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        estimator.backward(module, x, y)
    module.zero_grad(set_to_none=True)
    return sum(seen.values())


def checked_model(cfg: Config, data: Data, device: torch.device) -> nn.Module:
    """``build_model``, refusing first, naming the estimate, the memory available and the option to
    lower, a model or a training step that would not fit in memory."""
    available = available_bytes(device)
    spec, options = estimators.spec(cfg.estimator), cfg.estimator_options()
    samples = spec.draws(estimators.samples_of(cfg.estimator, cfg.particles, cfg.iwae_k),
                         estimators.options_of(cfg.estimator, options))

    def refuse(need: float, what: str) -> None:
        raise VaeError(f"a training step needs about {need / GIB:.1f} GiB ({what}) but {available / GIB:.1f} GiB "
                       f"are available on {device.type}; lower {lower(cfg)}")

    params = 4 * parameter_bytes(lambda: instantiate(cfg, data.train_x.shape[1], "meta"))
    if params > HEADROOM * available:
        refuse(params, "the parameters, their gradients and Adam's moments")
    module = build_model(cfg, data, device)
    x, y = probe_batch(data, cfg, 4, module)
    name = cfg.estimator.removeprefix("jit-")  # measured eagerly
    own = estimators.options_of(name, options)
    probe = estimators.make(name, traces.plate_nesting(module, x, y), x.shape[1], iwae_k=spec.min_samples, **own)
    two, four = (saved_bytes(module, probe, x[:n], None if y is None else y[:n]) for n in (2, 4))
    # the slope in the batch, per draw: what grows with images and samples
    per_image = max(0.0, (four - two) / 2 / spec.draws(probe.samples, own))
    need = params + max(0.0, two - 2 * per_image) + per_image * cfg.batch_size * samples
    if need > HEADROOM * available:
        refuse(need, f"{per_image * samples / 2**20:.1f} MiB per image at {samples} sample(s), batch {cfg.batch_size}")
    return module


def lower(cfg: Config) -> str:
    """The options that set a step's size, as the user gave them."""
    options = ["--batch-size"]
    if estimators.spec(cfg.estimator).samples == "K":
        options.insert(0, "--iwae-k")
    elif cfg.particles > 1:
        options.insert(0, "--particles")
    options.append("--z-dim / --hidden (or the model's own size options)")
    return ", ".join(options)
