"""A comparison's tasks on real engines, on this machine: a Dask scheduler and two worker processes over
TCP on localhost (results identical to this process's; a worker SIGKILLed mid-task, its task retried and
resumed), a one-node SLURM cluster on localhost through submitit (``slurm_cluster.py``; a job signalled
before its time limit requeued and resumed), submitit's local executor, and the refusals without the extras."""

import json
import os
import sys

import pytest
import torch
from conftest import compare_and_report
from slurm_cluster import PARTITION, deadline, job_records, missing, one_node_cluster

import vae_pyro as vp
from vae_pyro.cli import main
from vae_pyro.errors import VaeError
from vae_pyro.lab.compare import RunTask, run_mode
from vae_pyro.lab.executors import environment_kept
from vae_pyro.lab.runs import ATTEMPT, CHECKPOINT

TINY = dict(hidden=(32,), z_dim=4, epochs=2, batch_size=256)
SPEC = dict(k=10, grad_draws=3, loss_draws=3, grad_batches=1)
NAMES = ["trace", "meanfield"]
STEPS = 4000 // 256
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def numbers(summary: dict) -> list:
    """Every number of a summary but the wall-clock ones."""
    rows = [{k: v for k, v in r.items() if k != "seconds_per_epoch"} for r in summary["estimators"]]
    return [rows, summary["gradients"], summary["loss_values"]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every process of this module at one torch thread: Dask runs its workers so (it sets OMP_NUM_THREADS=1,
    in this process's environment too, which submitit's and SLURM's jobs would then inherit), and on some CPUs
    MKL's sums change in their last bits with the thread count, so "the same numbers" holds at the same count."""
    threads = torch.get_num_threads()
    with environment_kept():
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return compare_and_report(dict(TINY), NAMES, tmp_path_factory.mktemp("local") / "c", **SPEC)


@pytest.fixture
def cluster(monkeypatch, tmp_path):
    """A real Dask scheduler with two worker processes over TCP on localhost; its workers die once, at
    their 22nd training step (in the second epoch, after the first checkpoint), when ``kill`` is set."""
    from distributed import LocalCluster

    def start(kill: bool = False):
        if kill:
            monkeypatch.setenv("VAE_PYRO_FAILPOINT", "step:22")
            monkeypatch.setenv("VAE_PYRO_FAILPOINT_ONCE", str(tmp_path / "killed"))
        made = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp", host="127.0.0.1",
                            dashboard_address=None)
        clusters.append(made)
        return made

    clusters = []
    yield start
    for made in clusters:
        made.close()


def test_a_dask_cluster_over_tcp_gives_the_numbers_of_this_process(in_process, cluster, tmp_path, capsys):
    address = cluster().scheduler_address
    assert address.startswith("tcp://127.0.0.1:")
    out = tmp_path / "c"
    comparison = vp.compare("vae", "mnist5k", NAMES, out=out, executor="dask", scheduler=address, progress=True,
                            **SPEC, **TINY)
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)
    assert comparison.table.shape[0] == 2
    err = capsys.readouterr().err
    assert "runs trained: 100%" in err and "runs diagnosed: 100%" in err  # the comparison's bars, not the workers'


def test_the_labs_own_dask_cluster_gives_the_numbers_of_this_process_and_leaves_its_environment(in_process, tmp_path):
    """--executor dask without --scheduler: a LocalCluster of --jobs one-thread workers, started and closed by the
    comparison, whose variables (OMP_NUM_THREADS, MALLOC_TRIM_THRESHOLD_, ...) do not stay in this process."""
    before = dict(os.environ)
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", NAMES, out=out, executor="dask", jobs=2, progress=False, **SPEC, **TINY)
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)
    assert dict(os.environ) == before


def test_a_worker_killed_mid_task_has_its_task_retried_and_nothing_lost(in_process, cluster, tmp_path):
    address = cluster(kill=True).scheduler_address
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", NAMES, out=out, executor="dask", scheduler=address, progress=False, **SPEC, **TINY)
    assert (tmp_path / "killed").exists()  # a worker did die in the middle of a run
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)
    for name in NAMES:
        epochs = [json.loads(line)["epoch"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2]


def test_a_retried_task_resumes_what_its_own_call_began(tmp_path):
    """A mark of this call with a checkpoint written after it: resume. An older checkpoint (the run --force
    replaces, its worker killed before it was removed), no checkpoint, or another call's mark: the task's mode."""
    run = tmp_path / "run"
    task = RunTask({}, str(run), "force", attempt="this-call", ks=(10,), label="x")
    assert run_mode(task) == "force"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"")
    os.utime(run / CHECKPOINT, ns=(1, 1))  # the replaced run's checkpoint, older than the mark
    (run / ATTEMPT).write_text("this-call")
    assert run_mode(task) == "force"
    (run / CHECKPOINT).unlink()
    assert run_mode(task) == "force"  # killed before its first checkpoint: start again
    (run / CHECKPOINT).write_bytes(b"")
    os.utime(run / ATTEMPT, ns=(1, 1))
    assert run_mode(task) == "resume"
    (run / ATTEMPT).write_text("an-earlier-call")  # --force replaces what an earlier call made
    assert run_mode(task) == "force"


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A one-node SLURM cluster on localhost, this process pointed at it; each test's wait bounded."""
    reason = missing()
    if reason is not None:
        pytest.skip(f"no SLURM cluster can start here: {reason}")
    with one_node_cluster(tmp_path / "slurm") as env, deadline(900):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield


def test_a_one_node_slurm_cluster_gives_the_numbers_of_this_process(in_process, slurm, tmp_path):
    """``--executor slurm``: every task an sbatch job that slurmctld schedules and slurmd runs, on localhost."""
    out = tmp_path / "c"
    main(["compare", "--model", "vae", "--estimators", ",".join(NAMES), "--out", str(out), "--quiet",
          "--executor", "slurm", "--slurm-partition", PARTITION, "--slurm-time", "10", "--k", "10",
          "--grad-draws", "3", "--loss-draws", "3", "--grad-batches", "1", "--hidden", "32", "--z-dim", "4",
          "--epochs", "2", "--batch-size", "256"])
    states = job_records(out / "slurm")
    assert len(states) == 2 * len(NAMES)  # each run trained in one job and diagnosed in another
    assert all("JobState=COMPLETED" in state and f"Partition={PARTITION}" in state for state in states), states
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)


@pytest.mark.slow  # about 4 minutes, nearly all of it slurmctld holding the requeued job before it may start again
def test_a_slurm_job_signalled_before_its_time_limit_is_requeued_and_resumes(in_process, slurm, tmp_path, monkeypatch):
    """USR2 in the second epoch of one training job, once (what SLURM sends 90 s before the limit): submitit
    requeues the job, which resumes from the epoch-1 checkpoint; nothing is lost and the numbers are the same."""
    monkeypatch.setenv("VAE_PYRO_FAILPOINT", "step:22")
    monkeypatch.setenv("VAE_PYRO_FAILPOINT_SIGNAL", "USR2")
    monkeypatch.setenv("VAE_PYRO_FAILPOINT_ONCE", str(tmp_path / "signalled"))
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", NAMES, out=out, executor="slurm", slurm={"partition": PARTITION}, progress=False,
               **SPEC, **TINY)
    restarts = job_records(out / "slurm")
    assert (tmp_path / "signalled").exists()
    assert sum("Restarts=1" in state for state in restarts) == 1, restarts  # one job ran twice
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)
    for name in NAMES:
        epochs = [json.loads(line)["epoch"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2]


# where a one-node cluster can start, the test above runs submitit for real and this one joins the slow tier
@(pytest.mark.slow if missing() is None else pytest.mark.usefixtures())
def test_submitits_local_executor_gives_the_numbers_of_this_process(in_process, tmp_path):
    """submitit's LocalExecutor: each task a job in its own process, as SLURM runs them (the fallback where
    slurm-wlm cannot be installed)."""
    import submitit

    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(timeout_min=10)
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", NAMES, out=out, executor=executor, progress=False, **SPEC, **TINY)
    assert numbers(json.loads((out / "summary.json").read_text())) == numbers(in_process)


def test_the_slurm_options_spelled_as_on_the_command_line_are_refused_naming_the_dict(tmp_path):
    with pytest.raises(VaeError, match=r"slurm=\{'partition': 'gpu', 'minutes': 30\}, not slurm_partition="):
        vp.compare("vae", "mnist5k", NAMES, out=tmp_path / "c", executor="slurm", slurm_partition="gpu",
                   slurm_minutes=30, **TINY)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("kind, module, extra", [("dask", "distributed", "dask"), ("slurm", "submitit", "slurm")])
def test_without_the_extra_one_line_names_the_install_and_nothing_is_written(tmp_path, monkeypatch, capsys, kind,
                                                                              module, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--executor", kind, "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and f"pip install 'vae_pyro[{extra}]'" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "ray"], "unknown --executor 'ray'"),
    (["--scheduler", "tcp://127.0.0.1:8786"], "add --executor dask"),
    (["--slurm-partition", "gpu"], "add --executor slurm"),
])
def test_bad_executor_options_are_refused_in_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        main(["compare", *args, "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "c").exists()


def test_in_this_process_the_first_failure_stops_the_comparison():
    """A stop signal's Interrupted (or any error) in one run: no later run starts."""
    from vae_pyro.lab.executors import Inline, run_all
    from vae_pyro.lab.train import Interrupted

    started = []

    def task(i: int) -> int:
        started.append(i)
        if i == 1:
            raise Interrupted("SIGINT at epoch 1, step 3", 2)
        return i

    with pytest.raises(Interrupted):
        run_all(Inline(), task, [(0,), (1,), (2,)], "runs", progress=False)
    assert started == [0, 1]


def test_a_thread_pool_is_refused_in_one_line():
    from concurrent.futures import ThreadPoolExecutor

    from vae_pyro.lab.executors import run_all

    with ThreadPoolExecutor(2) as pool, pytest.raises(VaeError, match="share one Pyro parameter store"):
        run_all(pool, print, [(1,)], "runs", progress=False)
