"""report.md for a comparison: the tables, every figure, and the command that made them."""

from pathlib import Path

from vae_pyro.runs import atomic_write


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(summary: dict) -> str:
    """One row per estimator: test ELBO, IS log-likelihood, gradient variance (trained point), s/epoch."""
    k = next(key for key in summary["estimators"][0] if key.startswith("test_is_log_likelihood_k"))
    rows = [[f"`{r['estimator']}`", f"{r['test_elbo']:.2f}", f"{r[k]:.2f}", f"{r['test_kl']:.2f}",
             str(r["active_units"]), f"{r.get('grad_var_encoder_trained', float('nan')):.3g}",
             f"{r.get('grad_var_decoder_trained', float('nan')):.3g}", f"{r['seconds_per_epoch']:.2f}"]
            for r in summary["estimators"]]
    header = ["estimator", "test ELBO", f"test log p(x), IS K={k.rsplit('k', 1)[1]}", "test KL", "active units",
              "grad var φ (encoder)", "grad var θ (decoder)", "s/epoch"]
    return _table(header, rows)


def gradient_table(summary: dict) -> str:
    rows = [[g["point"], f"`{g['estimator']}`", g["group"], f"{g['variance']:.3g}", f"{g['snr']:.3f}"]
            for g in summary["gradients"]]
    return _table(["parameters", "estimator", "group", "mean variance", "mean SNR"], rows)


def write_report(out: Path, summary: dict, figures: dict[str, Path]) -> Path:
    rel = {name: path.relative_to(out).as_posix() for name, path in figures.items()}
    draws = summary["gradients"][0]["draws"]
    losses = _table(["estimator", "mean loss per image", "std over draws"],
                    [[f"`{n}`", f"{v['mean']:.2f}", f"{v['std']:.3f}"] for n, v in summary["loss_values"].items()])
    text = f"""# Estimator comparison

Made by `{summary['command']}` on {summary['machine']}.
Every estimator started from the same initial weights and saw the same batches in the same order.
Figures are per image, in nats.

## Results

{results_table(summary)}

Gradient variances are at the trained weights of `{summary['reference']}` (below).

## Test ELBO by epoch and by training time

![test ELBO]({rel['curves']})

## Gradient variance and signal-to-noise ratio

{draws} gradient draws per estimator on one fixed training batch, at the shared initial weights and
at the trained weights of `{summary['reference']}`; mean over parameters of Var[g] and of |E g| / std g.

![gradients]({rel['gradients']})

{gradient_table(summary)}

## Loss values at fixed parameters

The distribution of each estimator's loss value over repeated draws at the trained weights of
`{summary['reference']}`, on the same batch.

![loss values]({rel['loss_values']})

{losses}
"""
    path = out / "report.md"
    atomic_write(path, text.encode())
    return path
