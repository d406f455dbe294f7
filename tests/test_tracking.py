"""Live tracking: what --log writes to TensorBoard event files and to an MLflow file store, read back
with each tool's own reader and checked against metrics.jsonl, also after a kill and --resume."""

import json
import os
import signal
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import vae_pyro as vp
from vae_pyro.cli import main
from vae_pyro.errors import VaeError
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.lab.runs import TRACKING
from vae_pyro.tracking import Tracking, file_store_allowed

TINY = dict(z_dim=4, hidden=(32,), batch_size=256, progress=False)
STEPS = 4000 // 256  # training steps per epoch of mnist5k at batch 256
TRAIN = ["--hidden", "32", "--z-dim", "4", "--batch-size", "256", "--epochs", "3", "--quiet"]
FLOAT32 = 1e-6  # TensorBoard stores scalars as float32


def tensorboard(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of an event-file folder: (step, value) in step order, as TensorBoard reads it."""
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def mlflow_client(run_dir):
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / TRACKING).read_text())
    with file_store_allowed():
        return MlflowClient(state["uri"]), state["run_id"]


def mlflow(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the run's MLflow run: (step, value) in step order, as the store holds it."""
    client, run_id = mlflow_client(run_dir)
    with file_store_allowed():
        keys = client.get_run(run_id).data.metrics
        return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def logged(kind: str, run_dir) -> dict[str, list[tuple[int, float]]]:
    return tensorboard(run_dir / "tensorboard" / run_dir.name / run_dir.name) if kind == "tensorboard" else mlflow(run_dir)


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def agrees(tracked: dict, run_dir, steps: int) -> None:
    """Every step once, in order; each epoch's mean step loss its -train_elbo; each epoch value its metrics.jsonl's."""
    records = history(run_dir)
    loss = tracked["step/loss"]
    assert [s for s, _ in loss] == list(range(steps * len(records)))
    for r in records:
        epoch = [v for _, v in loss[(r["epoch"] - 1) * steps: r["epoch"] * steps]]
        assert sum(epoch) / steps == pytest.approx(-r["train_elbo"], rel=FLOAT32)
        for key in ("train_elbo", "test_elbo", "test_kl", "seconds"):
            assert dict(tracked[f"epoch/{key}"])[r["epoch"] * steps - 1] == pytest.approx(r[key], rel=FLOAT32)
    assert dict(tracked["final/test_elbo"])[steps * len(records)] == pytest.approx(records[-1]["test_elbo"], rel=FLOAT32)


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_every_step_and_epoch_of_a_run_is_tracked(tmp_path, kind):
    run = vp.fit("vae", "mnist5k", out=tmp_path / "run", epochs=2, log=kind, **TINY)
    agrees(logged(kind, run.run), run.run, STEPS)
    if kind == "mlflow":
        client, run_id = mlflow_client(run.run)
        with file_store_allowed():
            info = client.get_run(run_id)
        assert (info.info.run_name, info.info.status) == ("run", "FINISHED")
        assert info.data.params["z_dim"] == "4" and info.data.params["hidden"] == "(32,)"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_pyro", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


# mlflow's kill in the slow tier (28 s of processes): the resume logic it shares is the next test's, on both kinds
@pytest.mark.parametrize("kind", ["tensorboard", pytest.param("mlflow", marks=pytest.mark.slow)])
def test_a_killed_and_resumed_run_tracks_each_step_once_with_the_uninterrupted_values(tmp_path, kind):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli("train", *TRAIN, "--log", kind, "--out", str(whole)).returncode == 0
    stopped = cli("train", *TRAIN, "--log", kind, "--out", str(killed), env={"VAE_PYRO_FAILPOINT": "step:22"})
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr  # in epoch 2, after epoch 1's checkpoint
    resumed = cli("train", *TRAIN, "--log", kind, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    tracked = logged(kind, killed)
    agrees(tracked, killed, STEPS)
    assert tracked["step/loss"] == logged(kind, whole)["step/loss"]  # bit for bit, as metrics.jsonl is
    if kind == "tensorboard":  # the figures train draws, as images
        acc = EventAccumulator(str(killed / "tensorboard" / "killed" / "killed"), size_guidance={"images": 0})
        acc.Reload()
        assert {"figures/curves", "figures/samples"} <= set(acc.Tags()["images"])  # a plot (RGBA) and a grey grid
        assert acc.Images("figures/samples")[-1].width == 8 * 30 + 2  # 8 × 8 digits, pixel for pixel
    else:
        client, run_id = mlflow_client(killed)
        with file_store_allowed():
            assert "figures/curves.png" in [a.path for a in client.list_artifacts(run_id, "figures")]


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_a_resume_replaces_the_steps_after_its_checkpoint(tmp_path, kind):
    """The steps a killed run sent after its last checkpoint are sent again on resume: they appear once,
    with the resumed values (here made different, so that a kept stale value would show)."""
    run = vp.fit("vae", "mnist5k", out=tmp_path / "run", epochs=1, log=kind, **TINY).run
    with Tracking(kind).open(run, done=10, config={}, history=[], steps_per_epoch=STEPS) as sink:
        for step in range(10, STEPS):
            sink.step(step, -1.0 if kind == "tensorboard" else 1e9)
    loss = dict(logged(kind, run)["step/loss"])
    assert sorted(loss) == list(range(STEPS))
    if kind == "tensorboard":  # TensorBoard purges from the checkpoint on: the new values
        assert all(loss[s] == -1.0 for s in range(10, STEPS)) and loss[9] != -1.0
    else:  # an MLflow run keeps the steps it holds, which a resumed run repeats bit for bit
        assert all(loss[s] != 1e9 for s in range(STEPS))


def test_a_comparison_is_one_experiment_with_a_run_per_seed_and_estimator(tmp_path):
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", estimators=["trace", "meanfield"], seeds=2, epochs=1, k=10, grad_draws=2,
               loss_draws=2, grad_batches=1, out=out, log="mlflow", **TINY)
    client, _ = mlflow_client(out / "seed-0" / "trace")
    with file_store_allowed():
        experiment = client.get_experiment_by_name("c")
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"seed-0/trace", "seed-0/meanfield", "seed-1/trace", "seed-1/meanfield", "comparison"}
    per_seed = {(r["seed"], r["estimator"]): r for r in json.loads((out / "summary.json").read_text())["per_seed"]}
    for (seed, name), row in per_seed.items():
        tracked = mlflow(out / f"seed-{seed}" / name)
        assert [s for s, _ in tracked["step/loss"]] == list(range(STEPS))
        key = LikelihoodKey(10).name
        assert tracked[f"summary/{key}"][-1][1] == pytest.approx(row[key], rel=1e-12)
    with file_store_allowed():
        assert "figures/seeds.png" in [a.path for a in client.list_artifacts(runs["comparison"].info.run_id, "figures")]


def test_a_comparison_in_processes_writes_one_event_folder_per_run(tmp_path):
    out = tmp_path / "c"
    vp.compare("vae", "mnist5k", estimators=["trace", "meanfield"], epochs=1,
               k=10, grad_draws=2, loss_draws=2, grad_batches=1, jobs=2, out=out, log="tensorboard", **TINY)
    for name in ("trace", "meanfield"):
        tracked = tensorboard(out / "tensorboard" / "c" / "seed-0" / name)
        assert [s for s, _ in tracked["step/loss"]] == list(range(STEPS))
        assert tracked["epoch/test_elbo"][0][1] == pytest.approx(history(out / name)[0]["test_elbo"], rel=FLOAT32)


@pytest.mark.parametrize("kind, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_without_the_extra_one_line_names_the_install_and_nothing_is_written(tmp_path, monkeypatch, capsys, kind,
                                                                              module):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without the package raises: ImportError
    for command in ("train", "compare"):
        with pytest.raises(SystemExit) as exit:
            main([command, "--log", kind, "--out", str(tmp_path / command), "--epochs", "1", "--quiet"])
        assert exit.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pip install 'vae_pyro[{kind}]'" in err
        assert not (tmp_path / command).exists()
    with pytest.raises(VaeError, match="pip install"):
        vp.fit("vae", "mnist5k", out=tmp_path / "api", log=kind, **TINY)
    assert not (tmp_path / "api").exists()


def test_bad_log_options_are_refused_in_one_line(tmp_path, capsys):
    for args, message in ((["--log", "wandb"], "unknown --log 'wandb'"), (["--log-uri", "x"], "name the tracker")):
        with pytest.raises(SystemExit) as exit:
            main(["train", *args, "--out", str(tmp_path / "r"), "--quiet"])
        assert exit.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


def test_an_mlflow_resume_that_is_no_repeat_sends_its_steps_again_and_says_so(tmp_path):
    """A resume with another --lr does not repeat the steps after the checkpoint: MLflow, which cannot delete,
    gets them again beside the old ones, and the run is tagged with the step they start from."""
    run = vp.fit("vae", "mnist5k", out=tmp_path / "run", epochs=1, log="mlflow", **TINY)
    config = {**run.config.to_dict(), "lr": 1e-4}
    with Tracking("mlflow").open(run.run, done=10, config=config, history=[], steps_per_epoch=STEPS) as sink:
        for step in range(10, STEPS):
            sink.step(step, 1e9)
    loss = mlflow(run.run)["step/loss"]
    assert [s for s, v in loss if v == 1e9] == list(range(10, STEPS))
    assert len(loss) == STEPS + (STEPS - 10)
    client, run_id = mlflow_client(run.run)
    with file_store_allowed():
        tags = client.get_run(run_id).data.tags
    assert tags["vae_pyro.steps_sent_again_from"] == "10" and tags["resumed_with.lr"] == "0.0001"
