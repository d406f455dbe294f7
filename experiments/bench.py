"""Training-step speed of every estimator against the hand-written loop, measured side by side.

In one process: the same network, the same pre-drawn batches, and blocks of steps of every
variant alternated (the order rotated each block), so that the machine's drift hits all of them
alike. Prints ms/step (median, min, max over blocks), the ratio to the hand-written loop, the
achieved GFLOP/s and the fraction of the GEMM floor, and seconds per epoch of the data set; then
the importance-sampled evaluation's throughput.

    python experiments/bench.py [--discrete] [--dataset fashion-mnist] [--batch 128] [--hidden 400] [--z-dim 50]
                                [--activation relu]
                                [--threads 2] [--device cpu] [--blocks 7] [--steps 40]
                                [--estimators meanfield,trace,jit-trace,jit-meanfield,score,iwae]
                                [--compiled hand,meanfield,trace] [--fused hand,trace]

Variants: `hand loop` (the hand-derived loss, one torch Adam: the project's hand-written loop),
and each estimator through fit's fast path (`fast`) and through pyro.infer.SVI (`svi`); with a
C++ compiler, `--compiled` estimators once more with `--compile` (torch.compile of the networks and
the hand loss, compiled before the timing starts), and the evaluation eager and compiled; `--fused`
estimators once more with `--adam fused` (torch's Adam in one kernel), eager and compiled. `hand loop
compiled fused` is the fastest float32 step measured at batch 256 (at 128, `hand loop fused`). At Pyro's
example's configuration (`--batch 256 --activation softplus`) the example's own step is timed beside
them (its model and guide, SVI with pyro.optim.Adam, validation on; pyro_example_loop.py holds it).
The GEMM floor is the time of a training step's matrix products alone (forward, and backward's
two per layer, one at the first, whose input is the data) at this batch size, measured here: the
arithmetic a step cannot avoid.
"""

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro_example_loop import BATCH, HIDDEN, ExampleVAE, Z

from vae_pyro import data as D
from vae_pyro.config import ADAMS, DEVICES, Config
from vae_pyro.errors import VaeError
from vae_pyro.lab.compiling import compile_model, cxx_found
from vae_pyro.lab.evaluate import is_log_likelihood
from vae_pyro.lab.experiment import instantiate, make_estimator, resolve_device
from vae_pyro.lab.trainers import make_trainer
from vae_pyro.models import hand
from vae_pyro.models.binary_vae import PIXEL_CLAMP

FOREACH, FUSED = ADAMS
EXAMPLE = "Pyro's example step"  # SVI, pyro.optim.Adam, Trace_ELBO, validation on, at the example's configuration


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layer_shapes(cfg: Config, x_dim: int) -> list[tuple[int, int, int]]:
    """(rows, fan_in, fan_out) of every linear layer of one training step of the MLP VAE."""
    samples = cfg.iwae_k if cfg.estimator == "iwae" else cfg.particles
    enc = [x_dim, *cfg.hidden, 2 * cfg.z_dim]
    dec = [cfg.z_dim, *cfg.hidden[::-1], x_dim]
    return ([(cfg.batch_size, m, n) for m, n in zip(enc[:-1], enc[1:])]
            + [(cfg.batch_size * samples, m, n) for m, n in zip(dec[:-1], dec[1:])])


def step_flops(shapes: list[tuple[int, int, int]]) -> float:
    """Forward 2·r·m·n per layer and the weight gradient as much again; the input gradient too, 2·r·m·n,
    at every layer but the first, whose input is the data (no gradient)."""
    return sum((4.0 if i == 0 else 6.0) * r * m * n for i, (r, m, n) in enumerate(shapes))


def gemm_floor_ms(shapes: list[tuple[int, int, int]], device: torch.device, repeats: int = 30) -> float:
    """Median time of the step's GEMMs alone: Y = XW and dW = Xᵀ dY for every layer, dX = dY Wᵀ for all but
    the first (the data's)."""
    mats = [(torch.randn(r, m, device=device), torch.randn(m, n, device=device), torch.randn(r, n, device=device))
            for r, m, n in shapes]
    times = []
    for i in range(repeats + 3):
        sync(device)
        start = time.perf_counter()
        for layer, (x, w, dy) in enumerate(mats):
            x @ w, x.T @ dy
            if layer > 0:
                dy @ w.T
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def alternate(runs: dict[str, Callable[[], object]], rounds: int, device: torch.device, block: int = 1
              ) -> dict[str, list[float]]:
    """Seconds of each run, in turn ``rounds`` times, ``block`` calls at a time."""
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            for _ in range(block):
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                times[label].append(time.perf_counter() - start)
    return times


def decoder_gemms(dims: list[int], rows: int, device: torch.device, chunk: int = 2048) -> Callable[[], None]:
    """The matrix products of the evaluation's decoder alone: ``rows`` draws × images through layers
    ``dims``, ``chunk`` rows at a time (``is_log_likelihood``'s default)."""
    weights = [torch.randn(m, n, device=device) for m, n in zip(dims[:-1], dims[1:])]
    inputs = [torch.randn(chunk, m, device=device) for m in dims[:-1]]

    def run() -> None:
        for _ in range(rows // chunk):
            for x, w in zip(inputs, weights):
                x @ w
    return run


def bernoulli_forms(rows: int, device: torch.device, grad: bool, repeats: int = 15) -> dict[str, float]:
    """Median ms of log Bern(x | sigmoid(l)) summed per row, written as x·l − softplus(l) (hand.py: through
    F.softplus with gradients, in place without, as the lab's evaluation computes it), as −BCE-with-logits
    (torch's, and so Pyro's, Bernoulli.log_prob) and, with a C++ compiler, as the first through
    torch.compile (one fused kernel); with the backward pass when ``grad``."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, 784, generator=gen).to(device).requires_grad_(grad)
    x = (torch.rand(rows, 784, generator=gen) < 0.3).float().to(device)
    forms = {"x·l − softplus(l)": lambda: hand.bernoulli_log_prob(x, logits),
             "−BCE-with-logits": lambda: -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)}
    if cxx_found():
        fused = torch.compile(hand.bernoulli_log_prob)
        forms["compiled x·l − softplus(l)"] = lambda: fused(x, logits)
    times = {name: [] for name in forms}
    with torch.set_grad_enabled(grad):
        for i in range(repeats + 2):
            for name, form in forms.items():
                sync(device)
                start = time.perf_counter()
                out = form()
                if grad:
                    out.sum().backward()
                sync(device)
                if i >= 2:
                    times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


def wrapped_batches(x: torch.Tensor, size: int, steps: int) -> list[torch.Tensor]:
    """``steps`` full batches of ``x`` in order, wrapping round a small data set (mnist5k has 31 of 128)."""
    per_epoch = len(x) // size
    return [x[j * size : (j + 1) * size] for j in (i % per_epoch for i in range(steps))]


def resident_peak_mib(reset: bool = False) -> float:
    """The process's peak resident memory so far (Linux VmHWM), in MiB; ``reset`` starts it anew from
    the current resident size (writing 5 to /proc/self/clear_refs)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def probe_memory(kind: str, args: argparse.Namespace) -> None:
    """In this fresh process: load the data and build the model; then, with the peak reset, train 40
    steps (``train``) or estimate log p(x) of 100 test images at K = 5,000 (``eval``). Prints the
    resident memory after loading and the peak during the work, in MiB."""
    cfg = Config(dataset=args.dataset, batch_size=args.batch, hidden=(args.hidden,), z_dim=args.z_dim)
    ds = D.load(args.dataset)
    vae = instantiate(cfg, ds.x_dim, torch.device("cpu"))
    loaded = resident_peak_mib(reset=True)
    if kind == "train":
        trainer = make_trainer(make_estimator(cfg, vae, ds.train_x), vae, cfg.lr)
        for i, b in enumerate(wrapped_batches(ds.train_x, args.batch, 40)):
            trainer.step(D.binarise(b, D.seeded(i)))
    else:
        is_log_likelihood(vae, D.binarise(ds.test_x[:100], D.seeded(1)), k=5000)
    print(loaded, resident_peak_mib())


def peak_memory_mib(kind: str) -> tuple[float, float]:
    """(resident MiB with the data loaded, peak MiB during the work) of a fresh ``--probe kind`` process."""
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--probe", kind], capture_output=True, text=True,
                          check=True)
    loaded, peak = map(float, done.stdout.split()[-2:])
    return loaded, peak


def alternated(steppers: dict[str, Callable[[torch.Tensor], float]], batches: list[torch.Tensor], blocks: int,
               device: torch.device) -> dict[str, list[float]]:
    """ms per step of each variant, one value per block of ``batches``, the variants' order rotated each block.

    Pyro's param store is global: each variant owns it while it steps (a fresh one per switch would re-trace
    the jit-* estimators, so each keeps its own store and swaps it in). Five warm-up steps first: first-call
    costs, jit and torch.compile compilation."""
    stores = {}
    for label, step in steppers.items():
        pyro.clear_param_store()
        for b in batches[:5]:
            step(b)
        stores[label] = pyro.get_param_store().get_state()
    times: dict[str, list[float]] = {label: [] for label in steppers}
    labels = list(steppers)
    for block in range(blocks):
        for label in labels[block % len(labels):] + labels[: block % len(labels)]:
            pyro.get_param_store().set_state(stores[label])
            sync(device)
            start = time.perf_counter()
            for b in batches:
                steppers[label](b)
            sync(device)
            times[label].append(1000 * (time.perf_counter() - start) / len(batches))
            stores[label] = pyro.get_param_store().get_state()
    return times


class PlainBinaryVAE(torch.nn.Module):
    """The linear binary VAE (``vae_pyro.models.binary_vae``) without Pyro, for the plain DisARM step."""

    def __init__(self, x: torch.Tensor, z_dim: int = 200):
        super().__init__()
        self.encoder, self.decoder = torch.nn.Linear(x.shape[1], z_dim), torch.nn.Linear(z_dim, x.shape[1])
        self.prior = torch.nn.Parameter(torch.zeros(z_dim))
        self.register_buffer("pixel_mean", x.mean(0))
        with torch.no_grad():
            self.decoder.bias.copy_(torch.logit(self.pixel_mean.clamp(PIXEL_CLAMP, 1 - PIXEL_CLAMP)))


def plain_disarm_step(net: PlainBinaryVAE, optim: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One DisARM step written out: b = 1[u < σ(α)], b̃ = 1[u > σ(−α)], f(z) = log p(x, z) − log q(z | x);
    φ by ½ (f(b) − f(b̃)) (−1)^b̃ 1[b ≠ b̃] σ(|α|) through α, θ by the pair's mean of log p(x, z)."""
    alpha = net.encoder(x - net.pixel_mean)
    u = torch.rand_like(alpha)
    b, b_tilde = (u < torch.sigmoid(alpha)).float(), (u > torch.sigmoid(-alpha)).float()
    z = torch.stack([b, b_tilde])
    logits = net.decoder(z)
    log_p = (z * net.prior - F.softplus(net.prior)).sum(-1) + (x * logits - F.softplus(logits)).sum(-1)
    f = log_p - (z * alpha.detach() - F.softplus(alpha.detach())).sum(-1)
    fd = f.detach()
    g = 0.5 * (fd[0] - fd[1]).unsqueeze(-1) * (1 - 2 * b_tilde) * (b != b_tilde) * torch.sigmoid(alpha.abs()).detach()
    loss = -(f.mean(0).sum() + (g * alpha).sum())
    optim.zero_grad()
    loss.backward()
    optim.step()
    return loss.item()


DISCRETE = ("disarm", "arm", "rloo", "nvil", "rebar", "relax", "gumbel-st", "vimco", "rws", "score")
TWO_DRAWS = {"rloo": {"iwae_k": 2}, "vimco": {"iwae_k": 2}, "rws": {"iwae_k": 2}, "nvil": {"particles": 2},
             "gumbel-st": {"particles": 2}, "score": {"particles": 2}}  # arm, disarm: one pair; rebar, relax: one b


def discrete(args: argparse.Namespace, device: torch.device) -> None:
    """One step of each discrete estimator on the linear binary VAE (two draws of f per image, REBAR and
    RELAX three), through fit's fast path, beside the plain-PyTorch DisARM step; alternated blocks."""
    ds = D.load(args.dataset)
    x_all = D.binarise(ds.train_x, D.seeded(0)).to(device)
    batches = wrapped_batches(x_all, args.batch, args.steps)
    torch.manual_seed(0)
    plain = PlainBinaryVAE(ds.train_x.to(device)).to(device)
    plain_optim = torch.optim.Adam(plain.parameters(), lr=1e-4)
    steppers = {"plain PyTorch disarm": lambda b: plain_disarm_step(plain, plain_optim, b)}
    for name in DISCRETE:
        cfg = Config(dataset=args.dataset, model="binary-vae", estimator=name, batch_size=args.batch, lr=1e-4,
                     **TWO_DRAWS.get(name, {}))
        vae = instantiate(cfg, ds.x_dim, device)
        vae.init_from_data(ds.train_x.to(device))
        trainer = make_trainer(make_estimator(cfg, vae, ds.train_x.to(device)), vae, cfg.lr)
        steppers[name] = trainer.step
    times = alternated(steppers, batches, args.blocks, device)
    plain_ms = statistics.median(times["plain PyTorch disarm"])
    print(f"{args.dataset}, linear binary VAE 784-200-784 (200 Bernoulli latents), batch {args.batch}, {device}, "
          f"{args.threads} threads, torch {torch.__version__}, pyro-ppl {pyro.__version__}")
    print(f"{args.blocks} blocks x {args.steps} steps per variant, alternated\n")
    print("| estimator | ms/step median (min-max) | x plain DisARM | steps/s |")
    print("|---|---|---|---|")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"| {label} | {med:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {med / plain_ms:.2f} | {1000 / med:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--batch", type=int, default=None, help="[128; 50 with --discrete]")
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--activation", default="relu", help="the MLP's hidden activation (Pyro's example: softplus)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--estimators", default="meanfield,trace,jit-trace,jit-meanfield,score,iwae")
    p.add_argument("--compiled", default="hand,meanfield,trace", help="estimators timed also with --compile ('' none)")
    p.add_argument("--fused", default="hand,trace", help="estimators timed also with --adam fused, eager and (where "
                   "--compiled names them) compiled ('' none)")
    p.add_argument("--eval-images", type=int, default=100, help="test images for the IS throughput (K = 1,000)")
    p.add_argument("--discrete", action="store_true", help="time the discrete estimators on the binary VAE instead "
                   "(batch 50 unless --batch is given)")
    p.add_argument("--probe", choices=("train", "eval"), help=argparse.SUPPRESS)  # the memory probes' own processes
    args = p.parse_args()
    args.batch = args.batch or (50 if args.discrete else 128)
    torch.set_num_threads(args.threads)
    if args.probe:
        return probe_memory(args.probe, args)
    try:
        device = resolve_device(args.device)
    except VaeError as e:
        p.error(str(e))
    if args.discrete:
        return discrete(args, device)

    base = Config(dataset=args.dataset, batch_size=args.batch, hidden=(args.hidden,), z_dim=args.z_dim,
                  activation=args.activation)
    ds = D.load(args.dataset)
    x_all = D.binarise(ds.train_x, D.seeded(0)).to(device)
    steps_per_epoch = len(ds.train_x) // args.batch
    batches = wrapped_batches(x_all, args.batch, args.steps)

    variants = {"hand loop": ("hand", "fast", False, FOREACH)}
    for name in args.estimators.split(","):
        variants[f"{name} fast"] = (name, "fast", False, FOREACH)
        variants[f"{name} svi"] = (name, "svi", False, FOREACH)
    compiled = [n for n in args.compiled.split(",") if n] if cxx_found() else []
    fused = [n for n in args.fused.split(",") if n]
    for name, with_compile, adam in [*((n, True, FOREACH) for n in compiled), *((n, False, FUSED) for n in fused),
                                     *((n, True, FUSED) for n in fused if n in compiled)]:
        label = ("hand loop" if name == "hand" else f"{name} fast") + " compiled" * with_compile + " fused" * (adam == FUSED)
        variants[label] = (name, "fast", with_compile, adam)
    trainers, shapes = {}, {}
    for label, (name, loop, with_compile, adam) in variants.items():
        cfg = Config(**{**base.to_dict(), "estimator": name, "loop": loop, "adam": adam})
        vae = instantiate(cfg, ds.x_dim, device)
        if with_compile:
            compile_model(vae)
        trainers[label] = (make_trainer(make_estimator(cfg, vae, ds.train_x), vae, cfg.lr, loop, adam), vae)
        shapes[label] = tuple(layer_shapes(cfg, ds.x_dim))
    steppers = {label: trainer.step for label, (trainer, _) in trainers.items()}
    if (args.batch, args.hidden, args.z_dim, args.activation) == (BATCH, HIDDEN, Z, "softplus"):
        example = ExampleVAE().to(device)  # its own weights: the timing, not the numbers, is compared
        svi = SVI(example.model, example.guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
        steppers[EXAMPLE] = svi.step
        shapes[EXAMPLE] = shapes["hand loop"]
    flops = {label: step_flops(list(s)) for label, s in shapes.items()}
    floor_of = {s: gemm_floor_ms(list(s), device) for s in dict.fromkeys(shapes.values())}  # once per shape set
    floor = {label: floor_of[s] for label, s in shapes.items()}

    times = alternated(steppers, batches, args.blocks, device)

    hand = statistics.median(times["hand loop"])
    print(f"{args.dataset}, MLP 784-{args.hidden}-{args.z_dim}-{args.hidden}-784 ({args.activation}), batch {args.batch}, "
          f"{device}, {args.threads} threads, {platform.machine()}, torch {torch.__version__}, pyro-ppl {pyro.__version__}")
    print(f"{args.blocks} blocks x {args.steps} steps per variant, alternated\n")
    print("| variant | ms/step median (min-max) | x hand loop | GFLOP/s | GEMM floor / step time | s/epoch |")
    print("|---|---|---|---|---|---|")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"| {label} | {med:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {med / hand:.2f} | "
              f"{flops[label] / med / 1e6:.1f} | {floor[label] / med:.0%} | {med * steps_per_epoch / 1000:.2f} |")
    if EXAMPLE in times:
        ex = statistics.median(times[EXAMPLE])
        print(f"\nx faster than {EXAMPLE} ({ex:.2f} ms; its DataLoader, which pyro_example_loop.py times, not "
              "included): " + "; ".join(f"{label} {ex / statistics.median(ts):.2f}" for label, ts in times.items()
                                       if label != EXAMPLE))
    print(f"\nGEMM floor of the hand loop's step: {floor['hand loop']:.2f} ms "
          f"({flops['hand loop'] / floor['hand loop'] / 1e6:.1f} GFLOP/s); peak resident memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (whole process)")
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")

    # Evaluation: IS log-likelihood, K = 1,000, on a slice of the test set: against its own GEMMs, compiled, by chunk.
    x = D.binarise(ds.test_x[: args.eval_images], D.seeded(1)).to(device)
    evaluated = {"eager": trainers["hand loop"][1]}
    if "hand loop compiled" in trainers:
        evaluated["compiled"] = trainers["hand loop compiled"][1]
    for vae in evaluated.values():
        is_log_likelihood(vae, x, k=1000)  # warm-up: the very shapes timed, so compilation is done
    dec = [base.z_dim, args.hidden, ds.x_dim]
    per_chunk = 2048 // args.eval_images * args.eval_images  # is_log_likelihood's rows: whole draws of the images
    gemms = decoder_gemms(dec, args.eval_images * 1000, device, per_chunk)

    def eager(rows: int = 2048) -> None:
        is_log_likelihood(evaluated["eager"], x, k=1000, rows=rows)

    # eager against its own GEMMs in blocks of 4 calls, then compiled against eager, in blocks of 3
    eval_times = alternate({"eager": eager, "decoder GEMMs alone": gemms}, 2, device, block=4)
    versus = {}
    if "compiled" in evaluated:
        versus = alternate({"eager": eager, "compiled": lambda: is_log_likelihood(evaluated["compiled"], x, k=1000)},
                           2, device, block=3)
        eval_times["compiled"] = versus["compiled"]
    eval_flops = 2.0 * args.eval_images * 1000 * sum(m * n for m, n in zip(dec[:-1], dec[1:]))
    gemm = step_flops(layer_shapes(base, ds.x_dim)) / floor["hand loop"] / 1e6
    own = eval_flops / statistics.median(eval_times.pop("decoder GEMMs alone")) / 1e9
    print(f"\nIS log-likelihood, K = 1,000, {args.eval_images} test images (medians of 8, in blocks of 4 alternated "
          f"with the decoder's GEMMs alone at the same chunk shapes: {own:.1f} GFLOP/s):")
    for label, ts in eval_times.items():
        seconds = statistics.median(ts)
        print(f"  {label}: {seconds:.2f} s, {eval_flops / seconds / 1e9:.1f} GFLOP/s in the decoder = "
              f"{eval_flops / seconds / 1e9 / own:.0%} of its GEMMs' rate ({eval_flops / seconds / 1e9 / gemm:.0%} "
              f"of the training step's above); {seconds * len(ds.test_x) / args.eval_images:.0f} s for all "
              f"{len(ds.test_x)}")
    if versus:
        print(f"  compiled / eager, alternated with each other: "
              f"{statistics.median(versus['compiled']) / statistics.median(versus['eager']):.2f}")
    chunk_times = alternate({rows: partial(eager, rows) for rows in (1024, 2048, 4096, 32768)}, 2, device, block=2)
    faults = {}
    for rows in chunk_times:  # minor page faults of one more call: buffers the allocator gave back to the OS
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        eager(rows)
        faults[rows] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print("  eager, by chunk: " + "; ".join(f"{rows:,} rows {statistics.median(ts):.2f} s ({faults[rows]:,} page faults)"
                                           for rows, ts in chunk_times.items()) + " (2,048: the default)")
    if not compiled and args.compiled:
        print("(no C++ compiler found: the compiled variants were left out)")

    print("\nThe Bernoulli log-likelihood, written three ways (ms, median of 15; ratios to x·l − softplus(l)):")
    for rows, grad, label in ((args.batch, True, "forward + backward (a training step)"),
                              (2048, False, "forward, no gradient (an evaluation chunk)")):
        t = bernoulli_forms(rows, device, grad)
        first = next(iter(t.values()))
        print(f"  {rows} rows, {label}: " + "; ".join(f"{name} {ms:.2f} ({ms / first:.2f})" for name, ms in t.items()))
    print("\nresident memory, each in a fresh process (Linux VmHWM, reset once the data set and model are loaded):")
    for kind, what in (("train", "training, 40 steps"), ("eval", "IS log-likelihood of 100 test images, K = 5,000")):
        loaded, peak = peak_memory_mib(kind)
        print(f"  {what}: {loaded:.0f} MiB after loading, peak {peak:.0f} MiB (+{peak - loaded:.0f} MiB)")


if __name__ == "__main__":
    main()
