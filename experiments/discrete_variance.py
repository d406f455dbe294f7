"""The variance of each discrete estimator's guide gradient at fixed weights, the papers' claims measured
(DisARM below ARM; RLOO and DisARM at two evaluations of f per image; REBAR and RELAX, three, with their
control variates fitted at those weights on other training batches). The weights: the linear binary VAE
(200 latents) after 60 DisARM steps on mnist5k; a batch of 50 test digits; tr Cov of the encoder's
gradient over 100 draws, with its standard error over 10 chunks of them. ``tests/test_discrete.py`` asserts the claims that hold.

    python experiments/discrete_variance.py
"""

import math

import pyro
import torch

from vae_pyro import data as datasets
from vae_pyro import estimators
from vae_pyro.lab.evaluate import EVAL_SEED
from vae_pyro.models.binary_vae import BinaryVAE

RUNS = {"arm": {}, "disarm": {}, "rloo": {"iwae_k": 2}, "rebar": {}, "relax": {}}


def chunked(values: torch.Tensor, statistic, chunks: int = 10) -> tuple[float, float]:
    """(mean, se) of ``statistic`` over equal chunks of the draws: a standard error that needs no theory."""
    per_chunk = torch.tensor([statistic(c) for c in values.chunk(chunks)])
    return per_chunk.mean().item(), (per_chunk.std() / math.sqrt(chunks)).item()


def fitted_binary_vae(steps: int = 60) -> tuple[BinaryVAE, torch.Tensor, list[torch.Tensor]]:
    """The linear binary VAE (200 latents) after ``steps`` DisARM steps on mnist5k (batches of 50 of its 4,000
    training digits), a batch of 50 test digits to measure on, and the other training digits in batches of
    50 (what a control variate is fitted on)."""
    digits = datasets.load("mnist5k")
    torch.manual_seed(0)
    module = BinaryVAE()
    module.init_from_data(digits.train_x)
    est, optim = estimators.make("disarm"), torch.optim.Adam(module.parameters(), lr=1e-3)
    gen = datasets.seeded(EVAL_SEED)
    train = datasets.binarise(digits.train_x, gen).split(50)
    for step in range(steps):
        optim.zero_grad()
        est.backward(module, train[step])
        optim.step()
    return module, datasets.binarise(digits.test_x[:50], datasets.seeded(EVAL_SEED)), list(train[steps:])


def guide_variance(module: BinaryVAE, x: torch.Tensor, name: str, fit_on: list[torch.Tensor], draws: int = 100,
                   fit_control: int = 100, **options) -> tuple[float, float]:
    """tr Cov of the encoder's gradient at fixed weights on batch ``x``, (mean, se) over 10 chunks of the draws;
    REBAR's and RELAX's control variates are first fitted at these weights, ``fit_control`` steps on them alone
    over the training batches ``fit_on`` (not on ``x``)."""
    pyro.clear_param_store()
    est = estimators.make(name, **options)
    torch.manual_seed(3)
    if est.baseline_net is not None and fit_control:
        est.backward(module, x[:1])  # sizes a network that infers its input at its first call
        optim = torch.optim.Adam(est.baseline_net.parameters(), lr=1e-2)
        for step in range(fit_control):
            optim.zero_grad()
            est.backward(module, fit_on[step % len(fit_on)])
            optim.step()
    grads = []
    for _ in range(draws):
        module.zero_grad(set_to_none=True)
        est.backward(module, x)
        grads.append(torch.cat([p.grad.flatten() for p in module.encoder.parameters()]))
    module.zero_grad(set_to_none=True)
    return chunked(torch.stack(grads), lambda c: c.var(0).sum())


def variances() -> dict[str, tuple[float, float]]:
    """{estimator: (tr Cov of the encoder's gradient, its se)} at the weights of ``fitted_binary_vae``; the
    caller's RNG stream is left as it was."""
    with torch.random.fork_rng():
        module, x, fit_on = fitted_binary_vae()
        return {name: guide_variance(module, x, name, fit_on, **options) for name, options in RUNS.items()}


def main() -> None:
    measured = variances()
    print("| estimator | evaluations of f per image | tr Cov of the encoder's gradient | × DisARM's |")
    print("|---|---|---|---|")
    for name, (value, se) in measured.items():
        evaluations = 3 if name in ("rebar", "relax") else 2
        print(f"| `{name}` | {evaluations} | {value:.3g} ± {se:.2g} | {value / measured['disarm'][0]:.2f} |")


if __name__ == "__main__":
    main()
