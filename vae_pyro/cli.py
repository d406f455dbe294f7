"""The ``vae-pyro`` command: train, compare, evaluate, sample, report, gradvar, check."""

import argparse
import shlex
import sys
from pathlib import Path
from time import strftime

from vae_pyro.config import Config
from vae_pyro.errors import VaeError

DEFAULT_ESTIMATORS = ("trace", "meanfield", "hand", "score", "iwae")  # what compare and gradvar compare


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other error of the command."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def sizes(text: str) -> tuple[int, ...]:
    if text == "none":
        return ()
    try:
        return tuple(positive_int(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive layer sizes such as 400 or 512,256, or none for linear maps, got {text!r}"
        ) from None


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per Config field; the default None means 'not given' (the Config default applies)."""
    d = Config.__dataclass_fields__
    p.add_argument("--model", help="vae, cvae (conditional on the label), ae (deterministic autoencoder) [vae]")
    p.add_argument("--dataset", help=f"mnist5k (bundled), mnist, fashion-mnist, synthetic-linear [{d['dataset'].default}]")
    p.add_argument("--data-dir", help="folder for downloaded data sets [~/.cache/vae_pyro]")
    p.add_argument("--estimator", help="trace, meanfield, hand, score, iwae, jit-trace, jit-meanfield; "
                   "reconstruction for --model ae [meanfield]")
    p.add_argument("--particles", type=positive_int, help="Monte-Carlo samples L per image [1]")
    p.add_argument("--baseline", help="score estimator's baseline: none, decaying, neural [none]")
    p.add_argument("--iwae-k", type=positive_int, help="samples per image of the iwae bound [5]")
    p.add_argument("--z-dim", type=positive_int, help="latent dimensions [20; 32 for ae]")
    p.add_argument("--hidden", type=sizes, help="hidden layer sizes, e.g. 400 or 512,256; none: linear [400]")
    p.add_argument("--conv", action="store_const", const=True, help="convolutional encoder/decoder (28x28 images)")
    p.add_argument("--activation", help="relu, softplus, tanh [relu]")
    p.add_argument("--likelihood", help="bernoulli, continuous-bernoulli, gaussian, gaussian-shared (one sigma) "
                   "[bernoulli]")
    p.add_argument("--min-scale", type=float, help="floor of the Gaussian decoder's sigma [0.01]")
    p.add_argument("--prior", help="the cvae's p(z|y): learned, standard [learned]")
    p.add_argument("--beta", type=float, help="weight of the KL term [1]")
    p.add_argument("--kl-warmup", type=int, help="epochs over which the KL weight rises from 0 to beta [0]")
    p.add_argument("--binarize", help="dynamic, static, none [dynamic for bernoulli, else none]")
    p.add_argument("--batch-size", type=positive_int, help="[128]")
    p.add_argument("--epochs", type=positive_int, help="[30]")
    p.add_argument("--lr", type=float, help="Adam learning rate [1e-3]")
    p.add_argument("--seed", type=int, help="seeds weights, data order, binarisation and noise [0]")
    p.add_argument("--device", help="auto, cpu, cuda [auto]")
    p.add_argument("--loop", help="fast (one torch optimizer) or svi (pyro.infer.SVI, the reference) [fast]")


def given(args: argparse.Namespace) -> dict:
    """The Config fields the user set on the command line."""
    return {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}


def print_table(rows: dict[str, dict[str, float]], keys: list[str]) -> None:
    print(f"{'':10}" + "".join(f"{c:>12}" for c in rows))
    for key in keys:
        print(f"{key:10}" + "".join(f"{r[key]:12.2f}" for r in rows.values()))


def cmd_train(args: argparse.Namespace) -> None:
    from vae_pyro.distributed import launched
    from vae_pyro.report import write_run_report
    from vae_pyro.runs import Run
    from vae_pyro.train import fit

    options = given(args)
    if args.resume:
        if args.out is None:
            raise VaeError("--resume needs --out RUN_FOLDER, the run to continue")
        cfg = Config.from_dict({**Run.open(args.out).config().to_dict(), **options})
    else:
        cfg = Config(**options)
    if args.out is None and launched():
        raise VaeError("under torchrun, name the run folder with --out (every process must agree on it)")
    out = args.out or Path("runs") / f"{strftime('%Y%m%d-%H%M%S')}-{cfg.estimator}-{cfg.dataset}"
    result = fit(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet)
    if not result.leader:
        return
    write_run_report(result.run)
    print(f"\n{cfg.model} with {cfg.estimator} on {cfg.dataset}, {len(result.history)} epochs (nats per image)")
    print_table(result.final, list(result.final["test"]))
    if result.history:
        seconds = sorted(r["seconds"] for r in result.history)[len(result.history) // 2]
        print(f"{'s/epoch':10}{seconds:12.2f}  (median)")
    print(f"run folder: {result.run}")


def estimator_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_compare(args: argparse.Namespace) -> None:
    from vae_pyro.compare import compare
    from vae_pyro.distributed import launched
    from vae_pyro.report import results_table

    out = args.out or Path("runs") / f"compare-{strftime('%Y%m%d-%H%M%S')}"
    command = "vae-pyro " + " ".join(shlex.quote(a) for a in args.argv)
    if args.out is None and launched():
        raise VaeError("under torchrun, name the compare folder with --out (every process must agree on it)")
    summary = compare(given(args), args.estimators, out, jobs=args.jobs, resume=args.resume, force=args.force,
                      k=args.k, grad_draws=args.grad_draws, loss_draws=args.loss_draws,
                      progress=not args.quiet, command=command)
    if not summary:
        return
    print("\n" + results_table(summary))
    print(f"\ncompare folder: {out} (summary.json, summary.csv, report.md, figures/)")


def cmd_gradvar(args: argparse.Namespace) -> None:
    from vae_pyro.compare import fixed_batch, gradient_rows
    from vae_pyro.experiment import load_data, resolve_device, restore
    from vae_pyro.runs import write_json

    device = resolve_device(args.device)
    cfg, vae, _ = restore(args.run, device)
    data = load_data(cfg, device)
    x = fixed_batch(data.train_x, cfg.batch_size)
    options = {k: v for k, v in cfg.to_dict().items() if k != "estimator"}
    rows = gradient_rows(args.estimators, vae, x, options, f"{args.run}", args.draws, progress=True)
    write_json(Path(args.run) / "gradvar.json", rows)
    print(f"{'estimator':14}{'group':>9}{'variance':>13}{'SNR':>9}   ({args.draws} draws, {len(x)} images)")
    for r in rows:
        print(f"{r['estimator']:14}{r['group']:>9}{r['variance']:13.3g}{r['snr']:9.3f}")


def cmd_sample(args: argparse.Namespace) -> None:
    from vae_pyro.experiment import resolve_device, restore
    from vae_pyro.plots import samples

    cfg, model, _ = restore(args.run, resolve_device(args.device))
    if args.label is not None and not model.conditional:
        raise VaeError(f"--label needs a conditional model (--model cvae); {args.run} is a {cfg.model}")
    if args.label is not None and not 0 <= args.label < 10:
        raise VaeError(f"--label must be a class from 0 to 9, got {args.label}")
    suffix = "" if args.label is None else f"-label{args.label}"
    out = Path(args.out) if args.out else Path(args.run) / "figures" / f"samples{suffix}.png"
    print(samples(model, out, n=args.n, label=args.label, seed=args.seed))


def cmd_report(args: argparse.Namespace) -> None:
    from vae_pyro.report import write_run_report

    print(write_run_report(args.run))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vae_pyro.evaluate import evaluate_run

    result = evaluate_run(args.run, k=args.k, device=args.device, progress=True)
    print(f"{args.run}: test set, nats per image")
    for key, value in result.items():
        print(f"  {key:30} {value:10.2f}" if isinstance(value, float) else f"  {key:30} {value:>10}")


def cmd_check(args: argparse.Namespace) -> None:
    import torch

    from vae_pyro.checks import run_checks
    from vae_pyro.experiment import restore

    vae = restore(args.run, torch.device("cpu"))[1] if args.run else None
    if not run_checks(draws=args.draws, seed=args.seed, vae=vae):
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="vae-pyro", description="Variational autoencoders in Pyro, and an ELBO estimator lab.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train a VAE with one estimator")
    add_config_options(p)
    p.add_argument("--out", help="run folder [runs/<time>-<estimator>-<dataset>]")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="replace the run already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train every estimator from the same start; summary, figures, report")
    add_config_options(p)
    p.add_argument("--estimators", type=estimator_list, default=list(DEFAULT_ESTIMATORS),
                   help=f"comma-separated [{','.join(DEFAULT_ESTIMATORS)}]")
    p.add_argument("--out", help="compare folder [runs/compare-<time>]")
    p.add_argument("--jobs", type=positive_int, default=1, help="estimators trained at once, in separate processes [1]")
    p.add_argument("--resume", action="store_true", help="finish the comparison in --out; finished runs are kept")
    p.add_argument("--force", action="store_true", help="redo the comparison in --out")
    p.add_argument("--k", type=positive_int, default=1000, help="importance samples per test image [1000]")
    p.add_argument("--grad-draws", type=positive_int, default=100, help="gradient draws per estimator [100]")
    p.add_argument("--loss-draws", type=positive_int, default=500, help="loss draws per estimator [500]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gradvar", help="gradient variance and SNR of estimators at a run's trained weights")
    p.add_argument("run", help="run folder")
    p.add_argument("--estimators", type=estimator_list, default=list(DEFAULT_ESTIMATORS))
    p.add_argument("--draws", type=positive_int, default=100, help="gradient draws per estimator [100]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    p.set_defaults(func=cmd_gradvar)

    p = sub.add_parser("sample", help="images decoded from prior samples (one class with --label, for a cvae)")
    p.add_argument("run", help="run folder")
    p.add_argument("--n", type=positive_int, default=64, help="how many [64]")
    p.add_argument("--label", type=int, help="the class to draw (cvae)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG file [RUN/figures/samples.png]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("report", help="(re)make a run's figures and report.md")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("evaluate", help="test ELBO, KL / reconstruction, IS log-likelihood of a run")
    p.add_argument("run", help="run folder")
    p.add_argument("--k", type=positive_int, default=1000, help="importance samples per image [1000]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda [auto]")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("check", help="hand-derived vs Pyro estimators on real batches; exit 1 on failure")
    p.add_argument("--draws", type=positive_int, default=2000, help="draws for the trace-vs-hand mean [2000]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", help="check this run's trained module instead of a freshly initialised one")
    p.set_defaults(func=cmd_check)

    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        args.func(args)
    except VaeError as e:
        print(f"vae-pyro: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("vae-pyro: interrupted", file=sys.stderr)
        sys.exit(130)
