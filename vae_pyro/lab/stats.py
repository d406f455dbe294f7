"""Statistics over seeds: no ranking of estimators from one training run.

Each seed trains every estimator from the same initial weights on the same batches, so the seeds
are independent repetitions of the whole comparison and, within a seed, estimators are paired.
For a metric m measured on seeds s = 1..S,

    mean  m̄ = (1/S) Σ_s m_s,            se = sd(m_s) / √S
    paired difference to the reference   d_s = m_s(estimator) − m_s(reference),
    95% interval  d̄ ± t_{0.975, S−1} · sd(d_s) / √S     (Student's t; S ≥ 2)

A difference is called out in words only where its interval excludes zero.
"""

import math
from collections.abc import Sequence

LEVEL = 0.95


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the se is NaN for fewer than two values."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean with its two-sided Student-t interval at ``level``."""
    from scipy.stats import t as student_t  # here, not at import: scipy.stats is 0.7 s of every command's start

    mean, se = mean_se(values)
    half = student_t.ppf(0.5 + level / 2, len(values) - 1) * se if len(values) > 1 else math.nan
    return mean, mean - half, mean + half


def over_seeds(rows_by_seed: list[list[dict]], reference: str, metrics: Sequence[str]) -> list[dict]:
    """One row per estimator from per-seed rows (``{"estimator": name, metric: value, ...}``, one
    list per seed, the same estimators in each): for each metric its mean, ``_se`` over seeds, and
    the paired difference to ``reference`` (``_diff``, ``_diff_lo``, ``_diff_hi``: 95% interval)."""
    names = [r["estimator"] for r in rows_by_seed[0]]
    table = [{r["estimator"]: r for r in rows} for rows in rows_by_seed]
    out = []
    for name in names:
        row = {"estimator": name, "seeds": len(table)}
        for metric in metrics:
            values = [t[name][metric] for t in table if metric in t[name]]
            if len(values) != len(table):
                continue
            row[metric], row[f"{metric}_se"] = mean_se(values)
            if name != reference:
                diffs = [t[name][metric] - t[reference][metric] for t in table]
                row[f"{metric}_diff"], row[f"{metric}_diff_lo"], row[f"{metric}_diff_hi"] = interval(diffs)
        out.append(row)
    return out


def excludes_zero(row: dict, metric: str) -> bool:
    """Whether the paired difference's interval for ``metric`` lies wholly on one side of zero."""
    lo, hi = row.get(f"{metric}_diff_lo", math.nan), row.get(f"{metric}_diff_hi", math.nan)
    return lo > 0 or hi < 0


def gradient_table(grads: list[dict]) -> list[dict]:
    """Per estimator, parameter group and point: the gradient variance and SNR, mean and se over units.
    The units are the seeds where the rows carry one (each seed's value the mean over its fixed
    batches), else the fixed batches."""
    unit = "seed" if grads and "seed" in grads[0] else "batch"
    cells: dict[tuple, dict[int, list[dict]]] = {}
    for g in grads:
        key = (g["estimator"], g["family"], g["k"], g["group"], g["point"])
        cells.setdefault(key, {}).setdefault(g[unit], []).append(g)
    out = []
    for (label, family, k, group, point), units in cells.items():
        row = {"estimator": label, "family": family, "k": k, "group": group, "point": point, "unit": unit,
               "units": len(units), "draws": next(iter(units.values()))[0]["draws"]}
        for stat in ("variance", "snr"):
            row[stat], row[f"{stat}_se"] = mean_se([sum(g[stat] for g in gs) / len(gs) for gs in units.values()])
        out.append(row)
    return out
