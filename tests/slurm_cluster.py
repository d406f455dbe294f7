"""A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd from Debian's packages
(`apt-get install slurmctld slurmd slurm-client munge`, which .ci/run does), each in the foreground as a
child of the test process, with every file they write in one temporary folder. No accounting database:
`sacct` answers that accounting is disabled, and submitit, which asks it for job states, falls back on the
result files its jobs write."""

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
PARTITION, NODE = "local", "vpnode"


def missing() -> str | None:
    """Why no cluster can be started here (a program absent, or not root), or None."""
    absent = [p for p in PROGRAMS if shutil.which(p) is None]
    if absent:
        return f"{', '.join(absent)} not found: apt-get install slurmctld slurmd slurm-client munge"
    if os.geteuid() != 0:
        return "slurmd runs jobs as their users and needs root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, cpus: int) -> str:
    host = socket.gethostname().split(".")[0]  # slurmctld refuses to run where SlurmctldHost is not this host
    return f"""ClusterName=vaepyro
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
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
NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(check, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test's SLURM cluster: {what} did not happen within {seconds:.0f} s")
        time.sleep(0.2)


@contextmanager
def one_node_cluster(folder: Path) -> Iterator[dict[str, str]]:
    """Start the three daemons with their files in ``folder``; yield the environment variables a client
    (sbatch, submitit) needs to reach them; stop them after the block."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, os.cpu_count() or 1))
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    daemons = []
    try:
        daemons.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={folder}/munge.socket", f"--key-file={key}",
             f"--log-file={folder}/munged.log", f"--pid-file={folder}/munged.pid", f"--seed-file={folder}/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for((folder / "munge.socket").exists, "munged's socket")
        daemons.append(subprocess.Popen(["slurmctld", "-D", "-c", "-f", str(conf)], env=full_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        daemons.append(subprocess.Popen(["slurmd", "-D", "-N", NODE, "-f", str(conf)], env=full_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def node_idle() -> bool:
            state = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%t"], env=full_env, capture_output=True,
                                   text=True)
            return state.stdout.strip() == "idle"

        wait_for(node_idle, f"node {NODE} reporting idle to slurmctld")
        yield env
    finally:
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
