"""The ``vae-pyro`` command: train, compare, evaluate, sample, report, gradvar, check."""

import argparse
import ast
import shlex
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from time import strftime

from vae_pyro.config import ESTIMATOR_OPTIONS, Config
from vae_pyro.errors import VaeError
from vae_pyro.estimators import NAMES
from vae_pyro.lab.compare import DEFAULT_ESTIMATORS


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


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a standard error needs at least 2 draws, got {value}")
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


def model_option(text: str) -> tuple[str, object]:
    """K=V for the model's constructor; V is read as a Python literal (8, 0.5, (400, 200), True) or kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected K=V with K a keyword of the model's constructor, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


PARSERS = {"hidden": sizes, "model_options": model_option}


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per Config field, with Config's help and default; None means 'not given'."""
    for f in fields(Config):
        flag = "--model-option" if f.name == "model_options" else "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING and f.default is not None else None
        shown = f" [{default}]" if default is not None else ""
        if "bool" in str(f.type):  # a switch: given means True
            p.add_argument(flag, action="store_const", const=True, help=f.metadata["help"])
        elif f.name == "model_options":
            p.add_argument(flag, dest=f.name, action="append", type=model_option, metavar="K=V", help=f.metadata["help"])
        else:
            kind = PARSERS.get(f.name) or next(t for t in (int, float, str) if t.__name__ in str(f.type))
            p.add_argument(flag, type=kind, help=f.metadata["help"] + shown)


def add_log_options(p: argparse.ArgumentParser) -> None:
    from vae_pyro.tracking import KINDS

    p.add_argument("--log", help=f"track every step's loss, the epochs, the config, the evaluation and the figures "
                                 f"live: {', '.join(KINDS)} (the extra of that name)")
    p.add_argument("--log-uri", help="TensorBoard's log folder or MLflow's tracking URI [tensorboard/ or the file "
                                     "store mlruns/ in --out]")


def given(args: argparse.Namespace) -> dict:
    """The Config fields the user set on the command line."""
    options = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and v is not None}
    if "model_options" in options:
        options["model_options"] = dict(options["model_options"])
    return options


def print_table(rows: dict[str, dict[str, float]], keys: list[str]) -> None:
    print(f"{'':10}" + "".join(f"{c:>12}" for c in rows))
    for key in keys:
        print(f"{key:10}" + "".join(f"{r[key]:12.2f}" for r in rows.values()))


def cmd_train(args: argparse.Namespace) -> None:
    from vae_pyro.lab.distributed import launched
    from vae_pyro.lab.runs import Run
    from vae_pyro.lab.train import fit
    from vae_pyro.report.markdown import write_run_report
    from vae_pyro.tracking import requested

    log = requested(args.log, args.log_uri)
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
    result = fit(cfg, out, resume=args.resume, force=args.force, progress=not args.quiet, log=log)
    if not result.leader:
        return
    write_run_report(result.run, cfg, result.module, result.data, result.history)
    if log is not None:
        with log.open(result.run) as sink:
            sink.figures(result.run / "figures")
    print(f"\n{cfg.model} with {cfg.estimator} on {cfg.dataset}, {len(result.history)} epochs (nats per image)")
    print_table(result.final, ["elbo", "recon", "kl"])
    if result.history:
        seconds = sorted(r["seconds"] for r in result.history)[len(result.history) // 2]
        print(f"{'s/epoch':10}{seconds:12.2f}  (median)")
    print(f"run folder: {result.run}")


def k_list(text: str) -> tuple[int, ...]:
    return tuple(positive_int(t) for t in text.split(","))


def estimator_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_compare(args: argparse.Namespace) -> None:
    from vae_pyro.lab.compare import CompareSpec, compare
    from vae_pyro.lab.distributed import launched
    from vae_pyro.lab.executors import ExecutorSpec
    from vae_pyro.report.comparison import write
    from vae_pyro.report.markdown import results_table, seeds_table
    from vae_pyro.tracking import requested

    log = requested(args.log, args.log_uri)
    out = args.out or Path("runs") / f"compare-{strftime('%Y%m%d-%H%M%S')}"
    command = "vae-pyro " + " ".join(shlex.quote(a) for a in args.argv)
    if args.out is None and launched():
        raise VaeError("under torchrun, name the compare folder with --out (every process must agree on it)")
    spec = CompareSpec(tuple(args.estimators), args.seeds, args.reference, args.k, args.grad_draws, args.grad_batches,
                       args.loss_draws)
    executor = ExecutorSpec(args.executor, args.jobs, args.scheduler, args.slurm_partition, args.slurm_time,
                            args.slurm_mem, args.slurm_gpus).checked()
    result = compare(given(args), spec, out, resume=args.resume, force=args.force, progress=not args.quiet,
                     command=command, render=write, log=log, executor=executor)
    if result is None:
        return
    print("\n" + (seeds_table(result.summary) if result.over_seeds else results_table(result.summary)))
    print(f"\ncompare folder: {out} (summary.json, summary.csv, report.md, figures/)")


def cmd_gradvar(args: argparse.Namespace) -> None:
    from vae_pyro.lab.compare import gradient_rows, gradient_specs
    from vae_pyro.lab.experiment import fixed_batch, restore_run
    from vae_pyro.lab.runs import write_json
    from vae_pyro.lab.stats import gradient_table

    run = restore_run(args.run, args.device)
    conditional = getattr(run.module, "conditional", False)
    batches = [fixed_batch(run.data, run.config, conditional, b) for b in range(args.batches)]
    options = {k: v for k, v in run.config.to_dict().items() if k != "estimator"}
    rows = gradient_rows(gradient_specs(args.estimators, options), run.module, batches, str(args.run),
                         args.draws, progress=True)
    table = gradient_table(rows)
    write_json(Path(args.run) / "gradvar.json", {"gradients": rows, "gradient_table": table})
    print(f"{'estimator':14}{'group':>9}{'variance':>13}{'± se':>10}{'SNR':>9}{'± se':>8}   "
          f"({args.draws} draws on each of {args.batches} batches of {len(batches[0][0])} images)")
    for r in table:
        print(f"{r['estimator']:14}{r['group']:>9}{r['variance']:13.3g}{r['variance_se']:10.2g}{r['snr']:9.3f}"
              f"{r['snr_se']:8.3f}")


def cmd_sample(args: argparse.Namespace) -> None:
    from vae_pyro.lab.experiment import restore_run
    from vae_pyro.report.figures import samples

    run = restore_run(args.run, args.device)
    classes = int(run.data.train_y.max()) + 1
    if args.label is not None and not getattr(run.module, "conditional", False):
        raise VaeError(f"--label needs a conditional model (--model cvae); {args.run} is a {run.config.model}")
    if args.label is not None and not 0 <= args.label < classes:
        raise VaeError(f"--label must be a class from 0 to {classes - 1}, got {args.label}")
    suffix = "" if args.label is None else f"-label{args.label}"
    out = Path(args.out) if args.out else Path(args.run) / "figures" / f"samples{suffix}.png"
    samples(run.module, run.data.test_x.shape[1], n=args.n, label=args.label, seed=args.seed, classes=classes, path=out)
    print(out)


def cmd_report(args: argparse.Namespace) -> None:
    from vae_pyro.lab.experiment import restore_run
    from vae_pyro.report.markdown import write_run_report

    run = restore_run(args.run, "cpu")
    print(write_run_report(args.run, run.config, run.module, run.data, run.history))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vae_pyro.lab.evaluate import evaluate_run

    result = evaluate_run(args.run, k=args.k, device=args.device, progress=True, compile=args.compile)
    print(f"{args.run}: test set, nats per image")
    for key, value in result.items():
        print(f"  {key:34} {value:10.3f}" if isinstance(value, float) else f"  {key:34} {value:>10}")


def cmd_check(args: argparse.Namespace) -> None:
    import torch

    from vae_pyro.lab.checks import print_report, run
    from vae_pyro.lab.experiment import build_model, labels, load_data, restore_run

    options = given(args)
    owned = {k: options.pop(k) for k in ESTIMATOR_OPTIONS if k in options}  # each goes to the estimators that own it
    if args.run:
        restored = restore_run(args.run, "cpu")
        cfg, module, test = restored.config, restored.module, restored.data
    else:
        cfg = Config(**{**options, "estimator": "trace"})  # the checks choose their own estimators
        test = load_data(cfg, torch.device("cpu"))
        module = build_model(cfg, test, torch.device("cpu"))
    unknown = [n for n in args.estimators or [] if n not in NAMES]
    if unknown:
        raise VaeError(f"unknown estimator {unknown[0]!r} in --estimators; choose from {', '.join(NAMES)}")
    x, y = test.test_x[: args.batch], labels(module, test.test_y[: args.batch])  # binarised once, as for evaluation
    report = run(module, x, y, args.estimators, draws=args.draws, seed=cfg.seed, progress=not args.quiet, **owned)
    print_report(report)
    if not report.passed:
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
    add_log_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="train every estimator from the same start; summary, figures, report")
    add_config_options(p)
    p.add_argument("--estimators", type=estimator_list, default=list(DEFAULT_ESTIMATORS),
                   help=f"comma-separated, of {', '.join(NAMES)} [{','.join(DEFAULT_ESTIMATORS)}]")
    p.add_argument("--out", help="compare folder [runs/compare-<time>]")
    p.add_argument("--executor", default="local", help="where the runs' tasks go: local (--jobs processes), dask "
                                                        "(--scheduler's cluster, or --jobs local workers), slurm "
                                                        "(one submitit job per task) [local]")
    p.add_argument("--jobs", type=positive_int, default=1, help="tasks at once on this machine: local processes, or "
                                                                "a local Dask cluster's workers [1: this process]")
    p.add_argument("--scheduler", help="a running Dask scheduler, tcp://HOST:8786 [a local cluster]")
    p.add_argument("--slurm-partition", help="SLURM partition of the jobs [the cluster's default]")
    p.add_argument("--slurm-time", type=positive_int, default=60, help="minutes each SLURM job may run [60]")
    p.add_argument("--slurm-mem", type=float, help="GB of memory per SLURM job [the partition's default]")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per SLURM job [0]")
    p.add_argument("--seeds", type=positive_int, default=1,
                   help="repeat the comparison for seeds --seed .. --seed + N - 1; mean, se and paired "
                        "differences over them [1]")
    p.add_argument("--reference", help="the estimator paired differences are taken to [meanfield if compared, "
                                       "else the first]")
    p.add_argument("--grad-batches", type=positive_int, default=3,
                   help="fixed training batches the gradient diagnostics average over [3]")
    p.add_argument("--resume", action="store_true", help="finish the comparison in --out; finished runs are kept")
    p.add_argument("--force", action="store_true", help="redo the comparison in --out")
    p.add_argument("--k", type=k_list, default=(1000,), help="importance samples per test image; several, such as "
                                                             "1000,5000, give an estimate at each [1000]")
    p.add_argument("--grad-draws", type=positive_int, default=100, help="gradient draws per estimator [100]")
    p.add_argument("--loss-draws", type=positive_int, default=500, help="loss draws per estimator [500]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_log_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gradvar", help="gradient variance and SNR of estimators at a run's trained weights")
    p.add_argument("run", help="run folder")
    p.add_argument("--estimators", type=estimator_list, default=list(DEFAULT_ESTIMATORS))
    p.add_argument("--draws", type=positive_int, default=100, help="gradient draws per estimator and batch [100]")
    p.add_argument("--batches", type=positive_int, default=3, help="fixed training batches to average over [3]")
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
    p.add_argument("--compile", action="store_true", help="torch.compile the model's networks first")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("check", help="every estimator against the bound and gradient it claims, on any model; "
                                     "exit 1 on failure")
    add_config_options(p)
    p.add_argument("--estimators", type=estimator_list, help=f"comma-separated, of {', '.join(NAMES)} [all that apply]")
    p.add_argument("--draws", type=at_least_two, default=100, help="paired draws per estimator, 2 or more [100]")
    p.add_argument("--batch", type=positive_int, default=16, help="test images in the batch [16]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--run", help="check this run's trained module instead of a freshly initialised --model")
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
