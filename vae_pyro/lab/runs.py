"""The run folder: config.json, metrics.jsonl, checkpoint.pt; every write atomic.

A file is written to ``<name>.tmp`` in the same folder, flushed to disk, then renamed over
its target, so a crash at any moment leaves either the old or the new file, never half of one.
"""

import fcntl
import io
import json
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import torch

from vae_pyro.config import RESUMABLE_CHANGES, Config
from vae_pyro.errors import VaeError
from vae_pyro.lab import faults

CONFIG, METRICS, CHECKPOINT, EVALUATION = "config.json", "metrics.jsonl", "checkpoint.pt", "evaluation.json"
TRACKING = "tracking.json"  # where --log sent the run (vae_pyro.tracking)
DIAGNOSIS = "diagnosis.json"  # its gradient diagnostics in a comparison (lab.compare.diagnose)
ATTEMPT = ".attempt"  # the comparison call that began the run (lab.compare.run_mode)
# what torch.load(weights_only=True) raises on a truncated, flipped or foreign file: the unpickler's
# errors, the zip reader's RuntimeError, and the decoding errors of damaged records
DAMAGED_FILE_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, UnicodeDecodeError, OSError,
                       IndexError, KeyError, struct.error)
CHECKPOINT_KEYS = {"epoch", "config", "x_dim", "module", "optimizer", "rng", "history"}


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` all at once (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            if path.name == CHECKPOINT:
                f.flush()
                faults.hit("checkpoint")  # the fault tests kill the process here, mid-write
            f.write(data[len(data) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise VaeError(f"cannot write {path} ({e.strerror}); free disk space or choose another --out") from None


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


class FolderLock:
    """One writer per folder: an exclusive ``fcntl.flock`` on ``<folder>/.lock``, which names the
    process holding it. The OS releases it when that process ends, however it ends, so a killed
    run never blocks its own ``--resume``. On NFS (v4, or v3 with its lock service) and Lustre
    (``-o flock``) flock locks hold across machines; where a file system refuses them, one line says so
    (one that grants them per machine only, NFS ``nolock`` or Lustre ``localflock``, cannot be detected)."""

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.folder, self.file = folder, None

    def acquire(self) -> "FolderLock":
        path = self.folder / self.NAME
        file = open(path, "a+")  # noqa: SIM115 - held open for as long as the lock is
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise VaeError(f"{self.folder} is being written by process {holder}; wait for it to finish or stop it, "
                           "or choose another --out") from None
        except OSError as e:  # ENOSYS, EOPNOTSUPP, ENOLCK: a network file system without lock support
            file.close()
            raise VaeError(f"{self.folder}'s file system cannot lock files ({e.strerror}); run folders must be on a "
                           "file system with flock (local disks; NFS with its lock service; Lustre mounted with "
                           "-o flock): choose another --out") from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self.file = file
        return self

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None

    def __getstate__(self) -> dict:  # a copy sent to another process (torchrun's ranks) holds no lock
        return {"folder": self.folder, "file": None}

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class Run:
    """A run folder on disk. ``create`` and ``resume`` take its lock (``FolderLock``): call
    ``release`` when done writing (``fit`` does)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = FolderLock(self.path)

    def release(self) -> None:
        self.lock.release()

    @classmethod
    def create(cls, path: str | Path, config: Config, force: bool = False) -> "Run":
        """A new run folder; refuse one that already holds a run unless ``force``."""
        run = cls(path)
        if (run.path / CONFIG).exists() and not force:
            raise VaeError(f"{run.path} already holds a run; pass --resume to continue it, --force to replace it, or another --out")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VaeError(f"cannot create run folder {run.path} ({e.strerror}); choose another --out") from None
        run.lock.acquire()
        for stale in (CHECKPOINT, EVALUATION, TRACKING, DIAGNOSIS):  # a replaced run's are of the weights it replaces
            (run.path / stale).unlink(missing_ok=True)
        write_json(run.path / CONFIG, config.to_dict())
        run.write_metrics([])
        return run

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise VaeError(f"{run.path} holds no run (no {CONFIG}); check the path or train one with vae-pyro train --out")
        return run

    def config(self) -> Config:
        try:
            return Config.from_dict(json.loads((self.path / CONFIG).read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise VaeError(f"{self.path / CONFIG} is corrupt ({e}); start a new run") from None

    @classmethod
    def resume(cls, path: str | Path, config: Config) -> "Run":
        """Reopen a run to continue it under ``config``; refuse changes outside RESUMABLE_CHANGES."""
        run = cls.open(path)
        saved = run.config()
        differences = saved.differences(config)
        changed = [k for k in differences if k not in RESUMABLE_CHANGES]
        if changed:
            diffs = ", ".join(f"{k}: run has {getattr(saved, k)!r}, asked {getattr(config, k)!r}" for k in changed)
            raise VaeError(f"cannot resume {run.path} with another configuration ({diffs}); drop those options or start a new run")
        if not (run.path / CHECKPOINT).is_file():
            raise VaeError(f"{run.path} has no {CHECKPOINT}: it never finished an epoch; start it again with --force")
        run.lock.acquire()
        if differences:  # a finished run resumed as it was keeps its file untouched
            write_json(run.path / CONFIG, config.to_dict())
        return run

    def write_metrics(self, history: list[dict]) -> None:
        atomic_write(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in history).encode())

    def metrics(self) -> list[dict]:
        path = self.path / METRICS
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def save_checkpoint(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.path / CHECKPOINT, buffer.getvalue())

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        path = self.path / CHECKPOINT
        try:
            with warnings.catch_warnings():  # a damaged file can make torch warn before it fails
                warnings.simplefilter("ignore")
                ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except DAMAGED_FILE_ERRORS as e:
            raise VaeError(f"{path} is corrupt ({type(e).__name__}); start the run again with --force") from None
        missing = CHECKPOINT_KEYS - set(ckpt) if isinstance(ckpt, dict) else CHECKPOINT_KEYS
        if missing:
            raise VaeError(f"{path} lacks {', '.join(sorted(missing))}: not a vae_pyro checkpoint; start the run again with --force")
        return ckpt
