"""A comparison rendered: every run's figures and report.md, each seed's figures and report, and the
figures and report over seeds, drawn from the ``ComparisonRun`` that ``lab.compare.compare`` returns."""

from pathlib import Path

from vae_pyro.lab.compare import ComparisonRun, SeedResult
from vae_pyro.lab.evaluate import LikelihoodKey
from vae_pyro.report import figures as plots
from vae_pyro.report.markdown import write_report, write_run_report, write_seeds_report


def write(comparison: ComparisonRun) -> Path:
    """Write every report of ``comparison``; return the path of its top report.md."""
    for seed in comparison.seeds.values():
        write_seed(seed, comparison)
    if not comparison.over_seeds:
        return comparison.out / "report.md"
    return write_over_seeds(comparison)


def _snr_figure(grads: list[dict], out: Path) -> dict[str, Path]:
    """The SNR-against-K figure, where the IWAE family was diagnosed at several K."""
    ks = {g["k"] for g in grads if g["k"] is not None}
    return {"snr_vs_k": plots.draw(out / "figures", "snr_vs_k.png", plots.snr_vs_k, grads)} if len(ks) > 1 else {}


def write_seed(seed: SeedResult, comparison: ComparisonRun) -> Path:
    """One seed's run reports, its figures (curves, gradients, loss values, SNR against K) and report.md."""
    out = seed.out
    for name, run in seed.trained.items():
        write_run_report(out / name, seed.configs[name], run.module, comparison.data, run.history)
    grads = seed.summary["gradients"]
    figures = {
        "curves": plots.draw(out / "figures", "curves.png", plots.curves,
                             {n: [t.history] for n, t in seed.trained.items()}),
        "gradients": plots.draw(out / "figures", "gradients.png", plots.gradients, grads),
        "loss_values": plots.draw(out / "figures", "loss_values.png", plots.loss_values,
                                  {n: v["draws"] for n, v in seed.losses.items()}),
        **_snr_figure(grads, out),
    }
    return write_report(out, seed.summary, figures)


def write_over_seeds(comparison: ComparisonRun) -> Path:
    """The figures over seeds (curves with bands, paired differences, gradients) and the report over seeds."""
    out, summary = comparison.out, comparison.summary
    seeds = comparison.seeds.values()
    histories = {n: [s.trained[n].history for s in seeds] for n in comparison.spec.names}
    likelihood = LikelihoodKey.first_in(summary["estimators"][0]).name
    figures = {
        "curves": plots.draw(out / "figures", "curves.png", plots.curves, histories),
        "seeds": plots.draw(out / "figures", "seeds.png", plots.seed_differences, summary["per_seed"],
                            summary["estimators"], summary["reference"], ["test_elbo", likelihood]),
        "gradients": plots.draw(out / "figures", "gradients.png", plots.gradients, summary["gradients"]),
        **_snr_figure(summary["gradients"], out),
    }
    return write_seeds_report(out, summary, figures)
