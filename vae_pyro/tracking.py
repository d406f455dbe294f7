"""Live tracking, optional: a run's numbers sent as they are made to TensorBoard event files or an MLflow
run, for ``--log tensorboard|mlflow`` (the extras ``[tensorboard]``, ``[mlflow]``).

A sink receives the loss of every training step (``step/loss``: the estimator's loss per image, nats), the
epoch records of ``metrics.jsonl`` (``epoch/<key>``), the ``Config`` as hyper-parameters, the final
evaluation (``final/<key>``) and the figures. Every value is logged at the index of the last training step
behind it (0-based, counted over the whole run). ``metrics.jsonl`` stays the record ``--resume`` reads; a
resumed run continues its tracker run without duplicate steps: TensorBoard's writer purges the steps at
and after the checkpoint (``purge_step``), and an MLflow run skips the steps it holds (a resumed run
repeats them bit for bit). The sink's place is kept in the run folder's ``tracking.json``.
"""

import contextlib
import json
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vae_pyro.errors import VaeError
from vae_pyro.lab.runs import TRACKING, write_json

KINDS = ("tensorboard", "mlflow")
PACKAGES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow"}
BATCH = 500  # MLflow metrics sent per call
SEND_SECONDS = 5.0  # the longest MLflow metrics wait before they are sent (TensorBoard's writer: flush_secs)


def require(kind: str) -> None:
    """Refuse an unknown tracker, or one whose package is not installed, naming the install that adds it."""
    if kind not in KINDS:
        raise VaeError(f"unknown --log {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        __import__(PACKAGES[kind])
    except ImportError:
        raise VaeError(f"--log {kind} needs the {kind} package, which is not installed: "
                       f"pip install 'vae_pyro[{kind}]'") from None


def requested(log: str | None, uri: str | None = None) -> "Tracking | None":
    """``--log`` and ``--log-uri`` as a Tracking, checked before anything is written; None: not asked for."""
    if log is None:
        if uri is not None:
            raise VaeError("--log-uri says where --log sends a run; name the tracker too: --log tensorboard or mlflow")
        return None
    return Tracking(log, uri)


@dataclass(frozen=True)
class Tracking:
    """Where runs are tracked: ``kind`` (tensorboard, mlflow); ``uri``, TensorBoard's log folder or MLflow's
    tracking URI (default: ``tensorboard/`` or the file store ``mlruns/`` in the folder asked for); MLflow's
    ``experiment`` (default: that folder's name); ``name``, the run's (default: its folder's name)."""

    kind: str
    uri: str | None = None
    experiment: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        require(self.kind)

    def within(self, folder: str | Path) -> "Tracking":
        """This tracking with the defaults of runs under ``folder`` filled in."""
        folder = Path(folder).resolve()
        store = folder / "tensorboard" if self.kind == "tensorboard" else folder / "mlruns"
        uri = self.uri or (str(store) if self.kind == "tensorboard" else store.as_uri())
        return replace(self, uri=uri, experiment=self.experiment or folder.name)

    def named(self, name: str) -> "Tracking":
        return replace(self, name=name)

    def open(self, run_dir: str | Path, done: int | None = None, config: dict | None = None,
             history: list[dict] = (), steps_per_epoch: int = 1) -> "Sink":
        """The sink of the run in ``run_dir``. ``done``: the training steps already taken when training
        starts (0) or resumes from a checkpoint; ``config`` and ``history`` (the epochs before ``done``) fill
        a tracker run that starts here. ``done=None``: attach to a finished run to add its evaluation and
        figures."""
        run_dir = Path(run_dir)
        tracking = self.within(run_dir)  # a given uri and experiment are kept
        name = tracking.name or run_dir.name
        sinks = {"tensorboard": TensorBoardSink, "mlflow": MlflowSink}
        return sinks[self.kind](tracking, name, run_dir, done, config or {}, list(history), steps_per_epoch)


def epoch_step(epoch: int, steps_per_epoch: int) -> int:
    """The index of epoch ``epoch``'s (1-based) last training step."""
    return epoch * steps_per_epoch - 1


def numbers(record: dict, prefix: str) -> dict[str, float]:
    """The numeric entries of a record, under ``prefix/``."""
    return {f"{prefix}/{k}": float(v) for k, v in record.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"}


def hyperparameters(config: dict) -> dict[str, Any]:
    """The Config as scalar hyper-parameters: None and tuples and dicts as their text."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()}


class Sink(ABC):
    """What the training loop and compare send; each tracker writes it its own way."""

    def __init__(self, tracking: Tracking, name: str, run_dir: Path, done: int | None, steps_per_epoch: int):
        self.run_dir, self.name, self.uri = run_dir, name, tracking.uri
        self.state = self._read_state()
        self.last = self.state.get("step", -1) if done is None else done - 1
        self.steps_per_epoch = steps_per_epoch

    def _read_state(self) -> dict:
        path = self.run_dir / TRACKING
        saved = json.loads(path.read_text()) if path.is_file() else {}
        return saved if saved.get("uri") == self.uri else {}

    def _save_state(self, **extra: Any) -> None:
        self.state = {**self.state, "uri": self.uri, "name": self.name, "step": self.last, **extra}
        write_json(self.run_dir / TRACKING, self.state)

    def _fill(self, config: dict, history: list[dict]) -> None:
        """A tracker run that starts here: the config, and the epochs trained before it."""
        self.config(config)
        for record in history:
            self.scalars(numbers(record, "epoch"), epoch_step(record["epoch"], self.steps_per_epoch))

    def step(self, step: int, loss: float) -> None:
        self.scalars({"step/loss": loss}, step)
        self.last = max(self.last, step)

    def epoch(self, record: dict) -> None:
        """An epoch record of metrics.jsonl, at its last step; then everything is flushed (before the
        checkpoint that claims it is written)."""
        self.scalars(numbers(record, "epoch"), epoch_step(record["epoch"], self.steps_per_epoch))
        self.flush()

    def final(self, metrics: dict[str, float], prefix: str = "final") -> None:
        """The final evaluation, one step past the last training step, under ``prefix/``."""
        self.scalars(numbers(metrics, prefix), self.last + 1, always=True)

    def flush(self) -> None:
        self._save_state()

    def close(self, status: str = "FINISHED") -> None:
        """Flush; ``status`` (FINISHED, FAILED, KILLED) is the run's end where the tracker records one."""
        self.flush()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def config(self, config: dict) -> None:
        """The Config as the run's hyper-parameters."""

    @abstractmethod
    def scalars(self, values: dict[str, float], step: int, always: bool = False) -> None:
        """Values at ``step``; a step the tracker run already holds is skipped unless ``always``."""

    @abstractmethod
    def figures(self, folder: Path) -> None:
        """The PNG figures of ``folder``."""


class TensorBoardSink(Sink):
    """Event files in ``<uri>/<experiment>/<name>/``: ``tensorboard --logdir <uri>`` shows one run per
    experiment and name, so comparisons sharing a log folder keep apart."""

    def __init__(self, tracking, name, run_dir, done, config, history, steps_per_epoch):
        from torch.utils.tensorboard import SummaryWriter

        super().__init__(tracking, name, run_dir, done, steps_per_epoch)
        logdir = Path(self.uri) / tracking.experiment / name
        fresh = done == 0 or not any(logdir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(logdir), purge_step=done, flush_secs=SEND_SECONDS)
        if done is not None and fresh:
            self._fill(config, history)
        self._save_state()

    def config(self, config: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)
        # the hparams dashboard: the Config, and the final/ values the run will log
        for summary in hparams(hyperparameters(config), {"final/test_elbo": 0.0}):
            self.writer.file_writer.add_summary(summary)

    def scalars(self, values: dict[str, float], step: int, always: bool = False) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def figures(self, folder: Path) -> None:
        from matplotlib.image import imread

        for png in sorted(Path(folder).glob("*.png")):
            image = imread(png)  # (H, W) for a grey image grid, (H, W, 4) for a matplotlib figure
            self.writer.add_image(f"figures/{png.stem}", image, self.last + 1, dataformats="HW" if image.ndim == 2 else "HWC")

    def flush(self) -> None:
        self.writer.flush()
        super().flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()
        super().close(status)


_ENVIRON = threading.RLock()  # reentrant: a sink's calls nest


@contextlib.contextmanager
def file_store_allowed() -> Iterator[None]:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set; set it for our calls only
    (one thread at a time: the environment is the process's)."""
    with _ENVIRON:
        saved = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
            else:
                os.environ["MLFLOW_ALLOW_FILE_STORE"] = saved


class MlflowSink(Sink):
    """One MLflow run named ``name`` in ``experiment``; its id kept in tracking.json, so a resumed run
    continues it."""

    def __init__(self, tracking, name, run_dir, done, config, history, steps_per_epoch):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        super().__init__(tracking, name, run_dir, done, steps_per_epoch)
        self.pending: list = []
        self.sent = time.monotonic()
        with file_store_allowed():
            self.client = MlflowClient(self.uri)
            run_id = self.state.get("run_id") if done != 0 else None
            if run_id is not None:
                try:
                    self.client.get_run(run_id)
                except MlflowException:
                    run_id = None
            self.logged: dict[str, int] = {}
            if run_id is None:
                run_id = self.client.create_run(self._experiment(tracking.experiment), run_name=name,
                                                tags={"vae_pyro.run_folder": str(run_dir.resolve())}).info.run_id
                self.run_id = run_id
                if done is not None:
                    self._fill(config, history)
            else:
                self.run_id = run_id
                if done is not None:  # training resumes
                    changed = self._resumed_with(config)
                    failed = self.client.get_run(run_id).info.status == "FAILED"
                    if changed or failed:  # its steps from the checkpoint on are not a repeat: all sent again
                        self.client.set_tag(run_id, "vae_pyro.steps_sent_again_from", str(done))
                    else:  # a repeat, bit for bit: the steps it holds are not sent again
                        self.logged = self._logged_steps()
        self._save_state(run_id=self.run_id)

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # made meanwhile by another run of the comparison
            return self.client.get_experiment_by_name(name).experiment_id

    def _logged_steps(self) -> dict[str, int]:
        """The last step the run holds for each metric."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k)) for k in keys}

    def _resumed_with(self, config: dict) -> bool:
        """Parameters cannot change in MLflow: a value a resume changed (epochs, lr) becomes a tag. Whether
        one that alters the steps did (not epochs: more of them, the same ones)."""
        params = self.client.get_run(self.run_id).data.params
        changed = False
        for key, value in hyperparameters(config).items():
            if key in params and params[key] != str(value):
                self.client.set_tag(self.run_id, f"resumed_with.{key}", str(value))
                changed = changed or key != "epochs"
        return changed

    def config(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in hyperparameters(config).items()]
        with file_store_allowed():
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[i: i + 100])

    def scalars(self, values: dict[str, float], step: int, always: bool = False) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in values.items() if always or step > self.logged.get(k, -1)]
        if len(self.pending) >= BATCH or time.monotonic() - self.sent > SEND_SECONDS:
            self._send()

    def _send(self) -> None:
        with file_store_allowed():
            for i in range(0, len(self.pending), BATCH):
                self.client.log_batch(self.run_id, metrics=self.pending[i: i + BATCH])
        self.pending, self.sent = [], time.monotonic()

    def figures(self, folder: Path) -> None:
        if any(Path(folder).glob("*.png")):
            with file_store_allowed():
                self.client.log_artifacts(self.run_id, str(folder), "figures")

    def flush(self) -> None:
        self._send()
        super().flush()

    def close(self, status: str = "FINISHED") -> None:
        super().close(status)
        with file_store_allowed():
            self.client.set_terminated(self.run_id, status)
