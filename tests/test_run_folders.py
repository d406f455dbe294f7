"""One writer per run folder; a refused or failed start leaves nothing behind; score's decaying
baselines reach the trained-weights diagnostics."""

import errno
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch
from conftest import TINY, compare_and_report

from vae_pyro.cli import main
from vae_pyro.config import Config
from vae_pyro.errors import VaeError
from vae_pyro.estimators import pyro_compat
from vae_pyro.lab import compare as compare_module
from vae_pyro.lab import diagnostics, evaluate
from vae_pyro.lab import runs as runs_module
from vae_pyro.lab.runs import FolderLock
from vae_pyro.lab.train import fit

SMALL = ["--hidden", "16", "--z-dim", "2", "--batch-size", "500", "--quiet"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_pyro", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_a_second_writer_is_refused_and_a_killed_writer_blocks_nothing(tmp_path):
    out = tmp_path / "r"
    first = subprocess.Popen([sys.executable, "-m", "vae_pyro", "train", *SMALL, "--epochs", "500", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (out / "checkpoint.pt").exists()
        second = cli("train", "--out", str(out), "--resume", "--quiet")
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"{out} is being written by process {first.pid}" in second.stderr
        forced = cli("train", *SMALL, "--out", str(out), "--force")
        assert forced.returncode == 2 and "is being written by process" in forced.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    resumed = cli("train", "--out", str(out), "--resume", "--epochs", str(done + 1), "--quiet")
    assert resumed.returncode == 0, resumed.stderr


def test_a_run_resumed_as_it_was_keeps_its_config_file_and_a_changed_one_is_rewritten(tmp_path):
    config = Config(epochs=1)
    runs_module.Run.create(tmp_path, config).release()
    (tmp_path / runs_module.CHECKPOINT).write_bytes(b"")
    path = tmp_path / runs_module.CONFIG
    os.utime(path, ns=(0, 0))
    runs_module.Run.resume(tmp_path, config).release()
    assert path.stat().st_mtime_ns == 0
    runs_module.Run.resume(tmp_path, Config(epochs=2)).release()
    assert path.stat().st_mtime_ns > 0 and runs_module.Run.open(tmp_path).config().epochs == 2


def test_a_compare_folder_has_one_writer(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    with FolderLock(out), pytest.raises(VaeError, match=f"{out} is being written by process {os.getpid()}"):
        compare_and_report(dict(TINY), ["trace"], out, progress=False)
    assert not (out / "compare.json").exists()


def test_a_file_system_without_locks_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    """NFS without its lock service answers flock with ENOLCK (or ENOSYS, EOPNOTSUPP): one line, not a traceback."""
    def no_locks(file, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(runs_module.fcntl, "flock", no_locks)
    with pytest.raises(SystemExit) as exit:
        main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "cannot lock files (No locks available)" in err


def test_a_start_that_fails_after_the_folder_was_made_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(evaluate, "metrics", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        fit(Config(**TINY), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()  # a folder that existed before is never removed
    with pytest.raises(RuntimeError):
        fit(Config(**TINY), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()


def test_decaying_baselines_learned_in_training_are_used_by_the_trained_weights_diagnostics(tmp_path, monkeypatch):
    """The baselines `score` learned must be in Pyro's param store while its gradients are drawn."""
    seen = []
    real = diagnostics.gradient_stats

    def spy(estimator, *args, **kwargs):
        if estimator.name == "score":
            seen.append({k: v.clone() for k, v in pyro_compat.decaying_baselines().items()})
        return real(estimator, *args, **kwargs)

    monkeypatch.setattr(diagnostics, "gradient_stats", spy)
    summary = compare_and_report({**TINY, "epochs": 1, "baseline": "decaying"}, ["meanfield", "score"], tmp_path / "c",
                      k=5, grad_draws=3, loss_draws=3, progress=False, grad_batches=1)
    assert summary and len(seen) == 2
    learned = compare_module.restore_run(tmp_path / "c" / "score", "cpu").checkpoint["optimizer"]["estimator"]
    assert seen[0] == {}  # at the initial weights: fresh baselines
    assert set(seen[1]) == set(learned["baseline_avg"]) and learned["baseline_avg"]
    assert all(torch.equal(seen[1][k], learned["baseline_avg"][k]) for k in learned["baseline_avg"])
    pyro.clear_param_store()


@pytest.mark.parametrize("args, message", [
    (["--estimator", "iwae", "--iwae-k", "100000"], "lower --iwae-k, --batch-size"),
    (["--z-dim", "100000000"], "(the parameters, their gradients and Adam's moments)"),
])
def test_a_step_that_would_not_fit_in_memory_is_refused_before_anything_is_written(tmp_path, capsys, args, message):
    from vae_pyro.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "a training step needs about" in err and message in err, err
    assert "GiB are available on cpu" in err
    assert not (tmp_path / "r").exists()


def test_the_memory_check_follows_the_memory_available(monkeypatch, tmp_path):
    """The decision follows the memory available: with plenty the K = 50 step runs, with none it is refused."""
    from vae_pyro.lab import memory

    cfg = Config(**{**TINY, "epochs": 1}, estimator="iwae", iwae_k=50)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10**12)
    fit(cfg, tmp_path / "ok", progress=False)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    with pytest.raises(VaeError, match="a training step needs about"):
        fit(cfg, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_a_replaced_run_keeps_no_evaluation_of_the_weights_it_replaced(tmp_path):
    """--force trains anew in the same folder: an evaluation.json left there would be of the old weights, and
    compare reuses an evaluation of the same epoch count (the numbers of another model, silently)."""
    out = tmp_path / "r"
    fit(Config(**{**TINY, "epochs": 1}), out, progress=False)
    first = evaluate.evaluate_run(out, k=5, device="cpu")
    fit(Config(**{**TINY, "epochs": 1, "seed": 1}), out, force=True, progress=False)
    assert not (out / "evaluation.json").exists()
    assert evaluate.evaluate_run(out, k=5, device="cpu")["test_elbo"] != first["test_elbo"]
