"""Where a comparison's tasks run: in this process, in local worker processes, on a Dask cluster, or as
SLURM jobs through submitit; or on any executor the caller passes. An executor is anything with
``submit(fn, *args)`` returning a future with ``done()`` and ``result()``: a
``concurrent.futures.Executor``, Dask's ``Client.get_executor()``, a submitit executor.

Each task reads its data itself and writes only its own run folder, so on a cluster the compare
folder must be on a file system every worker reads (and locks: ``runs.FolderLock``), and the data
on every worker (``--data-dir``).
"""

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from vae_pyro.errors import VaeError

KINDS = ("local", "dask", "slurm")
PACKAGES = {"dask": ("distributed", "dask"), "slurm": ("submitit", "slurm")}


class Executor(Protocol):
    def submit(self, fn: Callable, *args: Any) -> Any: ...


class Inline:
    """Runs each task at once, in this process (``--executor local --jobs 1``); a task's error (a stop
    signal's ``Interrupted`` too) goes straight up, and no later task runs."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future


@dataclass(frozen=True)
class ExecutorSpec:
    """``kind``: local (``jobs`` processes; 1: this process), dask (``scheduler``'s cluster, or a local
    cluster of ``jobs`` worker processes), slurm (one job per task through submitit, on
    ``slurm_partition``, each with ``slurm_minutes``, ``slurm_mem_gb`` and ``slurm_gpus``)."""

    kind: str = "local"
    jobs: int = 1
    scheduler: str | None = None
    slurm_partition: str | None = None
    slurm_minutes: int = 60
    slurm_mem_gb: float | None = None
    slurm_gpus: int = 0

    def checked(self) -> "ExecutorSpec":
        """This spec, or a VaeError naming what is wrong (an unknown kind, its package missing)."""
        if self.kind not in KINDS:
            raise VaeError(f"unknown --executor {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.jobs < 1:
            raise VaeError(f"--jobs must be a positive integer, got {self.jobs}")
        if self.scheduler is not None and self.kind != "dask":
            raise VaeError("--scheduler names a Dask cluster's scheduler; add --executor dask")
        slurm_set = self.slurm_partition is not None or self.slurm_mem_gb is not None or self.slurm_gpus
        if slurm_set and self.kind != "slurm":
            raise VaeError("the --slurm-* options set SLURM jobs; add --executor slurm")
        if self.kind in PACKAGES:
            module, extra = PACKAGES[self.kind]
            try:
                __import__(module)
            except ImportError:
                raise VaeError(f"--executor {self.kind} needs the {module} package, which is not installed: "
                               f"pip install 'vae_pyro[{extra}]'") from None
        return self

    @property
    def in_process(self) -> bool:
        return self.kind == "local" and self.jobs == 1

    def threads(self) -> int | None:
        """Torch threads per task where its tasks share this machine's cores; None elsewhere."""
        if self.kind == "local" or (self.kind == "dask" and self.scheduler is None):
            return max(1, (os.cpu_count() or 1) // self.jobs)
        return None


class Resubmittable:
    """A task that SLURM may stop and start again. Before a job's time limit SLURM signals it (submitit asks
    for ``--signal=USR2@90``); submitit then calls ``checkpoint``, which asks for the same call once more, and
    requeues the job. The task, run again, finds its own run's checkpoint and resumes (``compare.run_mode``);
    a preempted job is requeued the same way."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


class Requeueing:
    """A submitit executor whose every task is ``Resubmittable``."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.executor.submit(Resubmittable(fn), *args)


@contextmanager
def environment_kept() -> Iterator[None]:
    """This process's environment as it was before the block: a Dask ``LocalCluster`` writes its workers'
    variables (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``, …) into it too,
    where every process started later would inherit them."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update({k: v for k, v in before.items() if os.environ.get(k) != v})


@contextmanager
def started(spec: ExecutorSpec, folder: Path) -> Iterator[Executor]:
    """The executor of ``spec``, shut down after the block (a local Dask cluster with it). SLURM's job
    scripts and logs go to ``folder/slurm``, and a job stopped at its time limit or preempted is requeued."""
    if spec.in_process:
        yield Inline()
    elif spec.kind == "local":
        with ProcessPoolExecutor(spec.jobs, mp_context=get_context("spawn")) as pool:
            yield pool
    elif spec.kind == "dask":
        from distributed import Client, LocalCluster

        with environment_kept():
            cluster = None if spec.scheduler else LocalCluster(n_workers=spec.jobs, threads_per_worker=1,
                                                               processes=True, host="127.0.0.1", dashboard_address=None)
        try:
            with Client(spec.scheduler or cluster) as client:
                threaded = {w: n for w, n in client.nthreads().items() if n > 1}
                if threaded:
                    raise VaeError(f"the Dask workers {', '.join(threaded)} run several threads, whose tasks would "
                                   "share one Pyro parameter store; start them with one each (dask worker "
                                   "--nthreads 1, or processes=True with threads_per_worker=1)")
                yield client.get_executor(pure=False)  # a task whose worker dies is run again elsewhere
        finally:
            if cluster is not None:
                cluster.close()
    else:
        import submitit

        executor = submitit.AutoExecutor(folder=folder / "slurm")
        executor.update_parameters(timeout_min=spec.slurm_minutes, slurm_partition=spec.slurm_partition,
                                   mem_gb=spec.slurm_mem_gb, gpus_per_node=spec.slurm_gpus or None, tasks_per_node=1)
        yield Requeueing(executor)


def run_all(executor: Executor, fn: Callable, tasks: Sequence[tuple], desc: str, progress: bool,
            position: int = 0) -> list:
    """``fn(*task)`` for every task on ``executor``; the results in the tasks' order. A bar counts the
    tasks done (elapsed, ETA). The first task to fail raises its error, and the tasks not yet started are
    cancelled (those running finish: ``--resume`` keeps them)."""
    if isinstance(executor, ThreadPoolExecutor):
        raise VaeError("a thread pool's tasks would share one Pyro parameter store; use processes "
                       "(ProcessPoolExecutor, --jobs N) or a Dask or SLURM executor")
    futures = [executor.submit(fn, *task) for task in tasks]
    with tqdm(total=len(futures), desc=desc, unit="run", position=position, disable=not progress) as bar:
        pending = set(range(len(futures)))
        while pending:
            done = {i for i in pending if futures[i].done()}
            bar.update(len(done))
            pending -= done
            failed = next((futures[i] for i in sorted(done) if futures[i].exception() is not None), None)
            if failed is not None:
                for i in pending:
                    futures[i].cancel()
                failed.result()
            if pending:
                time.sleep(0.2)
    return [f.result() for f in futures]
