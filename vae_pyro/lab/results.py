"""Results as objects: what ``train`` and ``compare`` wrote, read back from their folders into
DataFrames, with short reprs and an HTML table for Jupyter. A run's module, config and history are
read by ``experiment.restore_run`` (the one place a run folder becomes objects); a comparison's
tables by ``load_comparison`` here, from the summary.json and metrics.jsonl files it wrote.

    run = vp.load_run("runs/trace")              # .config, .module, .metrics, .evaluation
    c = vp.load_comparison("runs/compare")       # .table, .per_seed, .curves, .gradients, .differences
    c.run("iwae", seed=1).module                 # one of its runs, restored
    figures.curves(c.histories)                  # vae_pyro.report.figures: the Figure, shown inline
"""

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from vae_pyro.errors import VaeError
from vae_pyro.lab.compare import MANIFEST
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.lab.experiment import Data, RestoredRun, restore_run
from vae_pyro.lab.runs import Run

SUMMARY = "summary.json"
DIFFERENCE = ("_diff", "_diff_lo", "_diff_hi")  # the paired difference's columns (``stats.over_seeds``)


def load_run(path: str | Path, device: str | torch.device = "cpu", data: Data | None = None) -> RestoredRun:
    """A run folder that ``train`` (or ``compare``) wrote: its ``config``, its ``module`` at the last checkpoint,
    ``metrics`` (a DataFrame, one row per epoch), ``evaluation`` (evaluation.json, if it was evaluated) and
    ``data``. ``data``: the data set already loaded for it (a comparison's runs share one)."""
    return restore_run(path, device, data)


@dataclass(repr=False)
class Comparison:
    """A comparison folder read back. ``table``: one row per estimator (over seeds: each metric's mean,
    its se over seeds and the paired difference to the reference with a 95% interval); ``per_seed``: one
    row per seed and estimator; ``curves``: every run's metrics per epoch; ``gradients``: the gradient
    statistics (one row per estimator, parameter group, point and batch); ``differences``: the paired
    differences, one row per estimator and metric; ``summary``: summary.json as written."""

    out: Path
    summary: dict
    _data: Data | None = field(default=None, compare=False)

    @property
    def seeds(self) -> list[int]:
        return list(self.summary.get("seeds", [self.summary.get("seed")]))

    @property
    def estimators(self) -> list[str]:
        return [row["estimator"] for row in self.summary["estimators"]]

    @property
    def reference(self) -> str:
        return self.summary["reference"]

    @cached_property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.summary["estimators"])

    @cached_property
    def per_seed(self) -> pd.DataFrame:
        if "per_seed" in self.summary:
            return pd.DataFrame(self.summary["per_seed"])
        return pd.DataFrame(self.summary["estimators"]).assign(seed=self.seeds[0])

    @cached_property
    def gradients(self) -> pd.DataFrame:
        return pd.DataFrame(self.summary["gradients"])

    @cached_property
    def differences(self) -> pd.DataFrame:
        """estimator, metric, diff, lo, hi: each metric's paired difference to the reference (over seeds only;
        a comparison of one seed has none, and an empty frame)."""
        rows = [{"estimator": row["estimator"], "metric": key[: -len(DIFFERENCE[0])], "diff": row[key],
                 "lo": row[key + "_lo"], "hi": row[key + "_hi"]}
                for row in self.summary["estimators"] for key in row if key.endswith(DIFFERENCE[0])]
        return pd.DataFrame(rows, columns=["estimator", "metric", "diff", "lo", "hi"])

    @cached_property
    def histories(self) -> dict[str, list[list[dict]]]:
        """{estimator: each seed's metrics.jsonl records}, what ``report.figures.curves`` draws."""
        return {name: [Run.open(self.folder(name, seed)).metrics() for seed in self.seeds] for name in self.estimators}

    @cached_property
    def curves(self) -> pd.DataFrame:
        """seed, estimator, epoch and every metric each run recorded after each epoch."""
        return pd.DataFrame([{"seed": seed, "estimator": name, **record}
                             for name, runs in self.histories.items() for seed, history in zip(self.seeds, runs)
                             for record in history])

    def folder(self, estimator: str, seed: int | None = None) -> Path:
        """The run folder of ``estimator`` at ``seed`` (the first seed by default)."""
        if estimator not in self.estimators:
            raise VaeError(f"{self.out} compares {', '.join(self.estimators)}, not {estimator!r}")
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.seeds:
            raise VaeError(f"{self.out} ran seeds {', '.join(map(str, self.seeds))}, not {seed}")
        return self.out / (f"seed-{seed}" if len(self.seeds) > 1 else "") / estimator

    def run(self, estimator: str, seed: int | None = None, device: str | torch.device = "cpu") -> RestoredRun:
        """One of the comparison's runs restored (``load_run``); the data set is loaded once for all of them."""
        run = load_run(self.folder(estimator, seed), device, self._data)
        self._data = run.data
        return run

    def __repr__(self) -> str:
        likelihood = LikelihoodKey.first_in(self.summary["estimators"][0])
        best = self.table.sort_values(likelihood.name, ascending=False).iloc[0]
        return (f"Comparison({self.out}: {self.summary['model']}, {len(self.estimators)} estimators × "
                f"{len(self.seeds)} seed(s), reference {self.reference}; best log p(x) at K={likelihood.k}: "
                f"{best['estimator']} {best[likelihood.name]:.2f})")

    def _repr_html_(self) -> str:
        key = LikelihoodKey.first_in(self.summary["estimators"][0])
        columns = [c for c in ("estimator", "test_elbo", "test_elbo_se", key.name, key.se, key.name + DIFFERENCE[0],
                               "seconds_per_epoch") if c in self.table]
        return f"<p><code>{self}</code></p>" + self.table[columns].to_html(index=False, float_format="{:.3f}".format)


def load_comparison(path: str | Path) -> Comparison:
    """A folder that ``compare`` wrote, with its tables as DataFrames (``Comparison``)."""
    out = Path(path)
    if not (out / MANIFEST).is_file():
        raise VaeError(f"{out} holds no comparison (no {MANIFEST}); check the path or run vae-pyro compare --out {out}")
    if not (out / SUMMARY).is_file():
        raise VaeError(f"{out} holds a comparison that did not finish (no {SUMMARY}); finish it with "
                       f"vae-pyro compare --out {out} --resume and the same options")
    try:
        summary = json.loads((out / SUMMARY).read_text())
    except json.JSONDecodeError as e:
        raise VaeError(f"{out / SUMMARY} is corrupt ({e}); finish the comparison again with --resume") from None
    return Comparison(out, summary)
