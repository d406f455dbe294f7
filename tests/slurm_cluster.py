"""A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd from Debian's packages
(`apt-get install slurmctld slurmd slurm-client munge`, which .ci/run does), each in the foreground as a
child of the test process, with every file they write in one temporary folder. No accounting database:
`sacct` answers that accounting is disabled, and submitit, which asks it for job states, falls back on the
result files its jobs write; a job that ends without writing one would be waited for forever, so the
tests bound their wait with ``deadline``."""

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
PARTITION, NODE = "local", "vpnode"


def missing() -> str | None:
    """Why no cluster can be started here (a program absent, or not root), or None."""
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users and needs root"
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free now (all held open while they are chosen)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def slurm_conf(folder: Path) -> str:
    """slurm.conf for one node on loopback, every path in ``folder``; completed jobs kept an hour for
    ``scontrol show job``."""
    host = socket.gethostname().split(".")[0]  # slurmctld refuses to run where SlurmctldHost is not this host
    ctld, slurmd = free_ports(2)
    cpus = len(os.sched_getaffinity(0))
    return f"""ClusterName=vaepyro
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(check: Callable[[], bool], what: str, daemons: dict[str, subprocess.Popen], folder: Path,
             seconds: float = 60.0) -> None:
    """Poll ``check`` until it holds; raise at once, with the daemon's log, if one of ``daemons`` has exited."""
    deadline = time.monotonic() + seconds
    while not check():
        for name, daemon in daemons.items():
            if daemon.poll() is not None:
                logs = "".join((folder / f"{name}.{kind}").read_text()[-2000:] for kind in ("stderr", "log")
                               if (folder / f"{name}.{kind}").exists())
                raise RuntimeError(f"the test's SLURM cluster: {name} exited with {daemon.returncode}:\n{logs}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test's SLURM cluster: {what} did not happen within {seconds:.0f} s; "
                               f"its logs are in {folder}")
        time.sleep(0.2)


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the block after ``seconds`` (SIGALRM; the main thread only)."""
    def expire(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s: a SLURM job may have ended without a result file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def one_node_cluster(folder: Path) -> Iterator[dict[str, str]]:
    """Start the three daemons with their files in ``folder``; yield the environment variables a client
    (sbatch, submitit) needs to reach them; cancel every job and stop them after the block."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder))
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    commands = {
        "munged": ["munged", "--foreground", "--force", f"--socket={folder}/munge.socket", f"--key-file={key}",
                   f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid",
                   f"--seed-file={folder}/munged.seed"],
        "slurmctld": ["slurmctld", "-D", "-c", "-f", str(conf)],
        "slurmd": ["slurmd", "-D", "-N", NODE, "-f", str(conf)],
    }
    daemons: dict[str, subprocess.Popen] = {}

    def client(*args: str) -> str:
        return subprocess.run(args, env=full_env, capture_output=True, text=True, timeout=10).stdout

    try:
        for name, command in commands.items():
            with open(folder / f"{name}.stderr", "w") as stderr:
                daemons[name] = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr)
            if name == "munged":
                wait_for((folder / "munge.socket").exists, "munged's socket", daemons, folder)
        wait_for(lambda: client("sinfo", "-h", "-n", NODE, "-o", "%t").strip() == "idle",
                 f"node {NODE} reporting idle to slurmctld", daemons, folder)
        yield env
    finally:
        try:
            if "slurmd" in daemons and daemons["slurmd"].poll() is None:
                client("scancel", f"--partition={PARTITION}")  # no job outlives the test, whatever stopped it
                wait_for(lambda: not client("squeue", "-h").strip(), "every job gone", daemons, folder, seconds=30)
        finally:
            stop(list(daemons.values()))


def job_records(jobs_folder: Path) -> list[str]:
    """``scontrol show job`` of every job whose log submitit wrote in ``jobs_folder`` (the cluster still up)."""
    jobs = {path.name.split("_")[0] for path in jobs_folder.glob("*_log.out")}
    return [subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout for job in jobs]


def stop(daemons: list[subprocess.Popen]) -> None:
    """SIGTERM each daemon, last started first; SIGKILL any still running 15 s later."""
    for daemon in reversed(daemons):
        daemon.terminate()
    for daemon in daemons:
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
