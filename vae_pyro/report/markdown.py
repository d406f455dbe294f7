"""report.md for a run or a comparison: the tables, every figure, and the command that made them."""

import math
from dataclasses import fields
from pathlib import Path

from torch import nn

from vae_pyro.config import Config
from vae_pyro.estimators.registry import NEEDS, SPECS
from vae_pyro.lab import traces
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.lab.experiment import Data, labels
from vae_pyro.lab.runs import atomic_write
from vae_pyro.lab.stats import excludes_zero
from vae_pyro.report import figures as plots


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def estimator_table() -> str:
    """The docs' estimator table, drawn from the estimator records: what each is, its draws per image, what
    it needs of a model, what its value and gradients equal in expectation, its paper."""
    def reference(ref: dict[str, str]) -> str:
        grads = {q: ref.get(q) for q in ("guide", "model")}
        same = [q for q, b in grads.items() if b == ref["value"]]
        text = f"value: {ref['value']}" + (f"; gradient ({', '.join(same)}): {ref['value']}" if same else "")
        other = [f"{q} gradient: {b}" for q, b in grads.items() if b and b != ref["value"]]
        return "; ".join([text, *other])

    rows = []
    for s in SPECS.values():
        draws = {"L": "L = `--particles`", "K": "K = `--iwae-k`"}[s.samples] + (
            f" ≥ {s.min_samples}" if s.min_samples > 1 else "")
        if s.per_sample > 1:  # an antithetic pair, REBAR's three points
            draws = f"{s.per_sample}{s.samples}, {draws}"
        options = ", ".join(f"`--{k.replace('_', '-')}`, default {v}" for k, v in s.options.items())
        needs = "; ".join(NEEDS[n] for n in sorted(s.needs)) or "any latent site"
        rows.append([f"`{s.name}`", s.summary + (f" ({options})" if options else ""), draws, needs,
                     reference(s.reference), s.paper])
    return markdown_table(["name", "bound and gradient", "draws per image", "needs", "equals in expectation",
                           "paper"], rows)


def results_table(summary: dict) -> str:
    """One row per estimator: test ELBO and IS log-likelihood at each K (± se over test images), KL, active
    units, cluster accuracy of discrete sites, gradient variance (trained point), s/epoch."""
    first = summary["estimators"][0]
    keys = LikelihoodKey.all_in(first)
    clusters = [key for key in first if key.startswith("test_cluster_accuracy_")]
    rows = [[f"`{r['estimator']}`", f"{r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f}",
             *(f"{r[key.name]:.2f} ± {r[key.se]:.2f}" for key in keys),
             f"{r['test_kl']:.2f}", str(r["active_units"]), *(f"{r[c]:.3f}" for c in clusters),
             f"{r.get('grad_var_guide_trained', float('nan')):.3g}",
             f"{r.get('grad_var_model_trained', float('nan')):.3g}", f"{r['seconds_per_epoch']:.2f}"]
            for r in summary["estimators"]]
    header = ["estimator", "test ELBO", *(f"test log p(x), IS K={key.k}" for key in keys), "test KL", "active units",
              *(f"cluster accuracy q({c.rsplit('_', 1)[1]}|x)" for c in clusters),
              "grad var φ (guide)", "grad var θ (model)", "s/epoch"]
    return markdown_table(header, rows)


def _pm(value: float, se: float, fmt: str) -> str:
    """``value ± se``, or the value alone where there was one unit (no se)."""
    return f"{value:{fmt}}" if math.isnan(se) else f"{value:{fmt}} ± {se:{fmt}}"


def gradient_table(summary: dict) -> str:
    rows = [[g["point"], f"`{g['estimator']}`", g["group"], _pm(g["variance"], g["variance_se"], ".3g"),
             _pm(g["snr"], g["snr_se"], ".3f")] for g in summary["gradient_table"]]
    return markdown_table(["parameters", "estimator", "group", "mean variance", "mean SNR"], rows)


def _gradient_text(summary: dict, rel: dict[str, str]) -> str:
    g = summary["gradient_table"][0]
    units = f"{g['units']} {g['unit']}s" + (" (each the mean over its fixed batches)" if g["unit"] == "seed" else "")
    text = f"""{g['draws']} gradient draws per estimator and fixed training batch, at the shared initial weights
and at the trained weights of `{summary['reference']}`; mean over parameters of Var[g] and of
|E g| / std g, then mean ± 1 se over {units}.

![gradients]({rel['gradients']})

{gradient_table(summary)}
"""
    if "snr_vs_k" in rel:
        text += f"""
### Signal-to-noise ratio against K

![SNR against K]({rel['snr_vs_k']})
"""
    return text


def write_report(out: Path, summary: dict, figures: dict[str, Path]) -> Path:
    rel = {name: path.relative_to(out).as_posix() for name, path in figures.items()}
    losses = markdown_table(["estimator", "mean loss per image", "std over draws"],
                    [[f"`{n}`", f"{v['mean']:.2f}", f"{v['std']:.3f}"] for n, v in summary["loss_values"].items()])
    text = f"""# Estimator comparison

Made by `{summary['command']}` on {summary['machine']}, seed {summary['seed']}.
Every estimator started from the same initial weights and saw the same batches in the same order.
Figures are per image, in nats; ± is one standard error across test images (one seed: it says how
much the test set varies, not whether two estimators differ).

## Results

{results_table(summary)}

Gradient variances are at the trained weights of `{summary['reference']}` (below).

## Test ELBO by epoch and by training time

![test ELBO]({rel['curves']})

## Gradient variance and signal-to-noise ratio

{_gradient_text(summary, rel)}

## Loss values at fixed parameters

The distribution of each estimator's loss value over repeated draws at the trained weights of
`{summary['reference']}`, on the same batch.

![loss values]({rel['loss_values']})

{losses}
"""
    path = out / "report.md"
    atomic_write(path, text.encode())
    return path


def _mean_se(row: dict, key: str, digits: int = 2) -> str:
    return f"{row[key]:.{digits}f} ± {row[key + '_se']:.{digits}f}"


def _diff(row: dict, key: str) -> str:
    if f"{key}_diff" not in row:
        return "reference"
    mark = "" if excludes_zero(row, key) else " (interval holds 0)"
    return f"{row[key + '_diff']:+.2f} [{row[key + '_diff_lo']:+.2f}, {row[key + '_diff_hi']:+.2f}]{mark}"


def seeds_table(summary: dict) -> str:
    """One row per estimator over seeds: mean ± se over seeds, and the paired difference to the reference
    with its 95% interval, for the test ELBO and the IS log-likelihood at each K."""
    first = summary["estimators"][0]
    keys = LikelihoodKey.all_in(first)
    ref = summary["reference"]
    rows = [[f"`{r['estimator']}`", _mean_se(r, "test_elbo"), _diff(r, "test_elbo"),
             *(cell for key in keys for cell in (_mean_se(r, key.name), _diff(r, key.name))),
             _mean_se(r, "test_kl"), _mean_se(r, "active_units", 1),
             f"{r.get('grad_var_guide_trained', float('nan')):.3g}",
             f"{r.get('grad_snr_guide_trained', float('nan')):.3f}", f"{r['seconds_per_epoch']:.2f}"]
            for r in summary["estimators"]]
    header = ["estimator", "test ELBO", f"Δ vs `{ref}` [95%]",
              *(h for key in keys for h in (f"test log p(x), IS K={key.k}", f"Δ vs `{ref}` [95%]")), "test KL", "active units", "grad var φ (trained)", "SNR φ (trained)", "s/epoch"]
    return markdown_table(header, rows)


def write_seeds_report(out: Path, summary: dict, figures: dict[str, Path]) -> Path:
    """report.md of a comparison over seeds, with each seed's own report linked."""
    rel = {name: path.relative_to(out).as_posix() for name, path in figures.items()}
    seeds = summary["seeds"]
    links = ", ".join(f"[seed {s}](seed-{s}/report.md)" for s in seeds)
    text = f"""# Estimator comparison over {len(seeds)} seeds

Made by `{summary['command']}` on {summary['machine']}, seeds {', '.join(map(str, seeds))}.
Within a seed every estimator started from the same initial weights and saw the same batches in the
same order; the seeds change both. Figures are per image, in nats: mean ± 1 standard error over
seeds; Δ is the paired difference to `{summary['reference']}` (the same seed's run), its mean and
95% Student-t interval over seeds. Each seed's own report: {links}.

## Results

{seeds_table(summary)}

![each seed's value and the paired differences]({rel['seeds']})

## Test ELBO by epoch and by training time (band: ± 1 se over seeds)

![test ELBO]({rel['curves']})

## Gradient variance and signal-to-noise ratio

{_gradient_text(summary, rel)}"""
    path = out / "report.md"
    atomic_write(path, text.encode())
    return path


def train_command(cfg: Config, out: Path) -> str:
    """The `vae-pyro train` command line that makes this configuration (options that differ from the defaults)."""
    default = Config()
    parts = ["vae-pyro train"]
    for f in fields(Config):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) or f.name == "data_dir":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "model_options":
            parts += [f"--model-option {k}={v}" for k, v in value.items()]
        elif isinstance(value, bool):
            parts.append(flag)
        elif f.name == "hidden":
            parts.append(f"{flag} {','.join(map(str, value)) or 'none'}")
        else:
            parts.append(f"{flag} {value}")
    return " ".join([*parts, "--out", str(out)])


def write_run_report(run_dir: str | Path, cfg: Config, module: nn.Module, data: Data, history: list[dict]) -> Path:
    """A run's figures (figures/*.png) and its report.md: final metrics, curves, pictures, the command.
    Pictures of data points need 28×28 images; the latent pictures need a continuous latent site."""
    run_dir = Path(run_dir)
    y = labels(module, data.test_y)
    figures = run_dir / "figures"
    made = {"training curves": plots.draw(figures, "curves.png", plots.run_curves, history)}
    if data.test_x.shape[1] == plots.SIDE * plots.SIDE:
        made["test images (top) and their reconstructions with the latents at the guide's mean (bottom)"] = \
            plots.draw(figures, "reconstructions.png", plots.reconstructions, module, data.test_x, y)
        if traces.latent_sites(module, data.test_x[:1], None if y is None else y[:1]):
            made["samples from the prior" + (", one column per class" if y is not None else "")] = \
                plots.draw(figures, "samples.png", plots.samples, module, data.test_x.shape[1])
        made["latent space"] = plots.draw(figures, "latent.png", plots.latent_space, module, data.test_x, data.test_y)
        made["latent traversals: row d sweeps coordinate d"] = plots.draw(figures, "traversals.png", plots.traversals,
                                                                         module, data.test_x, y)
    last = history[-1]
    rows = [[k, f"{v:.2f}"] for k, v in last.items() if k.startswith(("train_", "test_"))]
    body = "\n\n".join(f"### {title}\n\n![{title}]({p.relative_to(run_dir).as_posix()})"
                        for title, p in made.items() if p is not None)
    text = f"""# {cfg.model} with `{cfg.estimator}` on {cfg.dataset}

Made by `{train_command(cfg, run_dir)}`; figures by `vae-pyro report {run_dir}` (train writes them too).

After {last['epoch']} epochs (nats per image):

{markdown_table(["metric", "value"], rows)}

{body}
"""
    atomic_write(run_dir / "report.md", text.encode())
    return run_dir / "report.md"
