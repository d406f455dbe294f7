"""The memory a step may use: the cgroup limit (SLURM's --mem, a container's) where one is set."""

from vae_pyro.lab.memory import cgroup_room


def cgroup(root, cgroup_lines: str, files: dict[str, str]):
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup_lines)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_a_v2_limit_leaves_the_limit_less_the_usage(tmp_path):
    root = cgroup(tmp_path, "0::/slurm/job_7\n", {"sys/fs/cgroup/slurm/job_7/memory.max": "4294967296\n",
                                                   "sys/fs/cgroup/slurm/job_7/memory.current": "1073741824\n"})
    assert cgroup_room(root) == 3 * 2**30


def test_a_slurm_jobs_limit_above_its_steps_cgroup_counts_and_page_cache_is_room(tmp_path):
    """SLURM sets --mem on the job's cgroup; the process runs in a step below it, whose own memory.max is max.
    Inactive page cache is reclaimed before an out-of-memory kill, so it counts as room."""
    job = "sys/fs/cgroup/system.slice/slurmstepd.scope/job_7"
    root = cgroup(tmp_path, "0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n", {
        f"{job}/memory.max": "8589934592\n", f"{job}/memory.current": "3221225472\n",
        f"{job}/memory.stat": "anon 1073741824\ninactive_file 1073741824\n",
        f"{job}/step_0/user/task_0/memory.max": "max\n", f"{job}/step_0/user/task_0/memory.current": "100\n"})
    assert cgroup_room(root) == 6 * 2**30


def test_v2_without_a_limit_says_none(tmp_path):
    root = cgroup(tmp_path, "0::/user.slice\n", {"sys/fs/cgroup/user.slice/memory.max": "max\n",
                                                  "sys/fs/cgroup/user.slice/memory.current": "1000\n"})
    assert cgroup_room(root) is None


def test_a_v1_limit_inside_a_container_is_read_at_the_mounts_root(tmp_path):
    """In a container /proc/self/cgroup names the host's path; the container sees its cgroup as the mount."""
    root = cgroup(tmp_path, "4:memory:/docker/abc\n0::/\n",
                  {"sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n",
                   "sys/fs/cgroup/memory/memory.usage_in_bytes": "536870912\n"})
    assert cgroup_room(root) == 3 * 2**29


def test_v1_unlimited_and_no_cgroup_file_say_none(tmp_path):
    root = cgroup(tmp_path / "a", "4:memory:/\n", {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                                                    "sys/fs/cgroup/memory/memory.usage_in_bytes": "5\n"})
    assert cgroup_room(root) is None
    assert cgroup_room(tmp_path / "nothing") is None
