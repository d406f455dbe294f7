"""The `vae-pyro` command: what a user sees, and how bad input is refused."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vae_pyro import data
from vae_pyro.cli import main
from vae_pyro.data.idx import write_idx

SMALL = ["--hidden", "64", "--z-dim", "4", "--quiet"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_pyro", *args], capture_output=True, text=True, timeout=300)


def refused(capsys, args: list[str]) -> str:
    """Run main(args) in-process; it must exit 2 with one line on stderr. Returns that line."""
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_train_evaluate_and_check_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    done = run_cli("train", "--epochs", "2", "--out", str(out), *SMALL)
    assert done.returncode == 0, done.stderr
    for word in ("elbo", "recon", "kl", "s/epoch", f"run folder: {out}"):
        assert word in done.stdout
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl", "checkpoint.pt", "report.md", "figures", ".lock"}
    assert {p.name for p in (out / "figures").iterdir()} == {
        "curves.png", "reconstructions.png", "samples.png", "latent.png", "traversals.png"}
    done = run_cli("evaluate", str(out), "--k", "10")
    assert done.returncode == 0 and "test_is_log_likelihood_k10" in done.stdout
    done = run_cli("check", "--draws", "20", "--estimators", "trace,meanfield,hand", "--hidden", "32", "--quiet")
    assert done.returncode == 0 and "FAILED" not in done.stdout and done.stdout.count(" ok") == 5 + 3 * 3


def test_a_bad_option_in_a_real_process_is_one_line_and_exit_2(tmp_path):
    done = run_cli("train", "--estimator", "nope", "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "unknown estimator 'nope'; choose one of trace, meanfield" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "cifar"], "unknown dataset 'cifar'; choose one of"),
        (["--estimator", "nope"], "unknown estimator 'nope'"),
        (["--likelihood", "poisson"], "unknown likelihood 'poisson'"),
        (["--binarize", "maybe"], "unknown binarize 'maybe'"),
        (["--z-dim", "-3"], "--z-dim must be a positive integer, got -3"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "-1"], "--batch-size must be a positive integer"),
        (["--particles", "0"], "--particles must be a positive integer"),
        (["--hidden", "400,0"], "argument --hidden: expected positive layer sizes"),
        (["--z-dim", "two"], "argument --z-dim: invalid int value: 'two'"),
        (["--lr", "-1"], "--lr must be a positive finite number"),
        (["--lr", "inf"], "--lr must be a positive finite number"),
        (["--beta", "inf"], "--beta must be a finite number >= 0"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--model", "gan"], "unknown model 'gan'"),
        (["--alpha", "0.3"], "--alpha applies to the renyi estimator only, not meanfield"),
        (["--estimator", "renyi", "--alpha", "1"], "--alpha must be a finite number >= 0 other than 1"),
        (["--iwae-m", "3"], "--iwae-m applies to miwae and piwae only, not meanfield"),
        (["--estimator", "ciwae", "--ciwae-beta", "1.5"], "--ciwae-beta must lie in [0, 1]"),
        (["--batch-size", "5000"], "--batch-size 5000 exceeds the 4000 training images"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(capsys, tmp_path, args, message):
    err = refused(capsys, ["train", "--out", str(tmp_path / "r"), *args])
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused(capsys, tmp_path):
    assert "no CUDA device; use --device cpu" in refused(capsys, ["train", "--device", "cuda", "--out", str(tmp_path / "r")])


def test_corrupt_data_file_is_refused_naming_it(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 5)):
        images, labels = data.IDX_FILES[split]
        write_idx(tmp_path / f"{images}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / f"{labels}.gz", rng.integers(0, 10, n, dtype=np.uint8))
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:100])
    err = refused(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert str(broken) in err and "download the file again" in err


def test_missing_data_offline_is_refused(capsys, tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")
    err = refused(capsys, ["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "cannot download fashion-mnist" in err and "--dataset mnist5k" in err


def test_existing_run_and_bad_resumes_are_refused_and_nothing_is_overwritten(capsys, tmp_path):
    out = tmp_path / "run"
    main(["train", "--epochs", "1", "--out", str(out), *SMALL])
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    assert "already holds a run; pass --resume" in refused(capsys, ["train", "--out", str(out), *SMALL])
    err = refused(capsys, ["train", "--out", str(out), "--resume", "--z-dim", "8", "--quiet"])
    assert "z_dim: run has 4, asked 8" in err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    assert "holds no run" in refused(capsys, ["train", "--out", str(tmp_path / "nothing"), "--resume"])
    assert "--resume needs --out" in refused(capsys, ["train", "--resume"])
    assert "holds no run" in refused(capsys, ["evaluate", str(tmp_path / "nothing")])


def test_resume_continues_to_more_epochs(capsys, tmp_path):
    out = tmp_path / "run"
    main(["train", "--epochs", "1", "--out", str(out), *SMALL])
    main(["train", "--epochs", "2", "--out", str(out), "--resume", "--quiet"])
    assert "2 epochs" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
