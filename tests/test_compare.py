"""`vae-pyro compare` end to end on a tiny network."""

import csv
import json
import shutil

import pytest
from conftest import compare_and_report

from vae_pyro.cli import main
from vae_pyro.errors import VaeError
from vae_pyro.lab import diagnostics

TINY = dict(hidden=(32,), z_dim=4, epochs=1, batch_size=256)
NAMES = ["trace", "meanfield", "hand", "score", "iwae"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    summary = compare_and_report(dict(TINY), NAMES, out, k=10, grad_draws=5, loss_draws=10, progress=False)
    return out, summary


def test_compare_writes_every_file_it_promises(compared):
    out, summary = compared
    for name in ("compare.json", "summary.json", "summary.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    for figure in ("curves", "gradients", "loss_values"):
        assert (out / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{figure}.png" in (out / "report.md").read_text()
    for name in NAMES:
        assert {"config.json", "metrics.jsonl", "checkpoint.pt", "evaluation.json"} <= {p.name for p in (out / name).iterdir()}
    assert [r["estimator"] for r in summary["estimators"]] == NAMES
    assert json.loads((out / "summary.json").read_text())["estimators"] == summary["estimators"]
    with open(out / "summary.csv") as f:
        assert [r["estimator"] for r in csv.DictReader(f)] == NAMES
    row = summary["estimators"][0]
    for key in ("test_elbo", "test_is_log_likelihood_k10", "active_units", "seconds_per_epoch",
                "grad_var_guide_init", "grad_var_model_trained", "grad_snr_guide_trained", "test_elbo_se"):
        assert key in row
    assert "vae-pyro compare" in (out / "report.md").read_text()


def test_gradient_rows_cover_every_estimator_and_iwae_k(compared):
    _, summary = compared
    labels = {(g["estimator"], g["point"]) for g in summary["gradients"]}
    for label in ["trace", "meanfield", "hand", "score", "iwae-1", "iwae-5", "iwae-50"]:
        assert (label, "initialisation") in labels and (label, "meanfield's trained weights") in labels


def test_hand_and_meanfield_train_to_the_same_weights(compared):
    """Same initial weights, batches and noise; SVI + pyro.optim.Adam vs torch.optim.Adam: the same run."""
    _, summary = compared
    rows = {r["estimator"]: r for r in summary["estimators"]}
    assert rows["hand"]["test_elbo"] == pytest.approx(rows["meanfield"]["test_elbo"], abs=1e-3)


def test_a_resumed_comparison_takes_each_runs_diagnosis_from_its_folder(compared, tmp_path, monkeypatch):
    """Nothing is measured again on --resume (a stop in the diagnose phase loses only the task it was in);
    other draw counts measure again (the negative control)."""
    out = tmp_path / "cmp"
    shutil.copytree(compared[0], out)

    def measured(*args, **kwargs):
        raise AssertionError("a gradient draw was measured again")

    monkeypatch.setattr(diagnostics, "gradient_stats", measured)
    again = compare_and_report(dict(TINY), NAMES, out, resume=True, k=10, grad_draws=5, loss_draws=10, progress=False)
    assert again["gradients"] == compared[1]["gradients"] and again["estimators"] == compared[1]["estimators"]
    with pytest.raises(AssertionError, match="measured again"):
        compare_and_report(dict(TINY), NAMES, out, resume=True, k=10, grad_draws=6, loss_draws=10, progress=False)


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_resume_keeps_finished_estimators_and_refuses_another_list(compared, tmp_path):
    out, _ = compared
    before = {n: (out / n / "checkpoint.pt").stat().st_mtime_ns for n in NAMES}
    compare_and_report(dict(TINY), NAMES, out, resume=True, k=10, grad_draws=5, loss_draws=10, progress=False)
    assert {n: (out / n / "checkpoint.pt").stat().st_mtime_ns for n in NAMES} == before
    with pytest.raises(VaeError, match="already holds a comparison"):
        compare_and_report(dict(TINY), NAMES, out, progress=False)
    with pytest.raises(VaeError, match="cannot resume .* it compares trace,meanfield,hand,score,iwae"):
        compare_and_report(dict(TINY), ["trace"], out, resume=True, progress=False)


def test_bad_estimator_list_is_refused_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--estimators", "trace,bogus", "--out", str(tmp_path / "c")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--estimators must name distinct estimators" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_jobs_train_in_separate_processes_and_give_the_same_numbers(compared, tmp_path):
    """--jobs 2 trains each estimator in its own process (one thread each); the results equal one-by-one
    training to 1e-4 nats (bit for bit here; thread counts may change the last bits of a sum elsewhere)."""
    _, summary = compared
    parallel = compare_and_report(dict(TINY), ["trace", "meanfield"], tmp_path / "p", jobs=2, k=10, grad_draws=5,
                       loss_draws=10, progress=False)
    rows = {r["estimator"]: r for r in summary["estimators"]}
    for row in parallel["estimators"]:
        for key in ("test_elbo", "test_is_log_likelihood_k10"):
            assert row[key] == pytest.approx(rows[row["estimator"]][key], abs=1e-4)


@pytest.fixture(scope="module")
def compared_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds") / "cmp"
    summary = compare_and_report(dict(TINY), ["trace", "meanfield", "hand"], out, k=10, grad_draws=5, grad_batches=2,
                      loss_draws=10, progress=False, seeds=3)
    return out, summary


def test_seeds_repeat_the_comparison_in_their_own_folders(compared_seeds):
    out, summary = compared_seeds
    assert summary["seeds"] == [0, 1, 2]
    for name in ("compare.json", "summary.json", "summary.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    for figure in ("curves", "seeds", "gradients"):
        assert f"figures/{figure}.png" in (out / "report.md").read_text()
    per_seed = {s: json.loads((out / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1, 2)}
    for s, seed_summary in per_seed.items():
        assert seed_summary["seed"] == s
        assert json.loads((out / f"seed-{s}" / "trace" / "config.json").read_text())["seed"] == s
    elbos = [per_seed[s]["estimators"][0]["test_elbo"] for s in (0, 1, 2)]
    assert len(set(elbos)) == 3  # the seeds are different runs


def test_seed_rows_hold_means_ses_and_paired_intervals(compared_seeds):
    """Mean and se over seeds, and the paired difference to meanfield with its 95% Student-t interval,
    recomputed here from the per-seed summaries."""
    from scipy.stats import t

    out, summary = compared_seeds
    per_seed = [{r["estimator"]: r for r in json.loads((out / f"seed-{s}" / "summary.json").read_text())["estimators"]}
                for s in (0, 1, 2)]
    rows = {r["estimator"]: r for r in summary["estimators"]}
    values = [p["trace"]["test_is_log_likelihood_k10"] for p in per_seed]
    diffs = [p["trace"]["test_is_log_likelihood_k10"] - p["meanfield"]["test_is_log_likelihood_k10"] for p in per_seed]
    mean = sum(values) / 3
    se = (sum((v - mean) ** 2 for v in values) / 2 / 3) ** 0.5
    row = rows["trace"]
    assert row["test_is_log_likelihood_k10"] == pytest.approx(mean, rel=1e-12)
    assert row["test_is_log_likelihood_k10_se"] == pytest.approx(se, rel=1e-9)
    d = sum(diffs) / 3
    half = t.ppf(0.975, 2) * (sum((x - d) ** 2 for x in diffs) / 2 / 3) ** 0.5
    assert (row["test_is_log_likelihood_k10_diff_lo"], row["test_is_log_likelihood_k10_diff_hi"]) == \
        pytest.approx((d - half, d + half), rel=1e-9)
    assert "test_elbo_diff" not in rows["meanfield"]  # the reference
    assert abs(rows["hand"]["test_elbo_diff"]) < 1e-3  # the same estimator, on the same ε
    assert "Δ vs `meanfield` [95%]" in (out / "report.md").read_text()
    assert {g["unit"] for g in summary["gradient_table"]} == {"seed"}
    assert {(g["seed"], g["batch"]) for g in summary["gradients"]} == {(s, b) for s in (0, 1, 2) for b in (0, 1)}


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_seeds_resume_and_refuse_another_count(compared_seeds):
    out, summary = compared_seeds
    before = (out / "seed-2" / "hand" / "checkpoint.pt").stat().st_mtime_ns
    again = compare_and_report(dict(TINY), ["trace", "meanfield", "hand"], out, k=10, grad_draws=5, grad_batches=2,
                    loss_draws=10, progress=False, seeds=3, resume=True)
    assert (out / "seed-2" / "hand" / "checkpoint.pt").stat().st_mtime_ns == before
    assert again["estimators"] == summary["estimators"]
    with pytest.raises(VaeError, match="over 3 seed\\(s\\), asked trace,meanfield,hand over 2"):
        compare_and_report(dict(TINY), ["trace", "meanfield", "hand"], out, seeds=2, resume=True, progress=False)


def test_a_reference_outside_the_comparison_is_refused(tmp_path):
    with pytest.raises(VaeError, match="--reference iwae is not among the compared estimators"):
        compare_and_report(dict(TINY), ["trace", "meanfield"], tmp_path / "c", reference="iwae", progress=False)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow  # the suite's 10-minute budget; -m slow runs it
def test_cli_seeds_prints_the_table_over_seeds(compared_seeds, capsys):
    out, _ = compared_seeds
    main(["compare", "--estimators", "trace,meanfield,hand", "--seeds", "3", "--out", str(out), "--resume",
          "--hidden", "32", "--z-dim", "4", "--epochs", "1", "--batch-size", "256", "--k", "10",
          "--grad-draws", "5", "--grad-batches", "2", "--loss-draws", "10", "--quiet"])
    printed = capsys.readouterr().out
    assert "Δ vs `meanfield` [95%]" in printed and "| `hand` |" in printed


def test_a_comparison_folder_reads_back_as_dataframes(compared_seeds):
    """vp.load_comparison: the tables compare wrote, every run's curves, the paired differences, the runs."""
    import torch

    import vae_pyro as vp
    from vae_pyro.lab.runs import Run

    out, summary = compared_seeds
    c = vp.load_comparison(out)
    assert c.seeds == [0, 1, 2] and c.estimators == ["trace", "meanfield", "hand"] and c.reference == "meanfield"
    assert list(c.table["estimator"]) == c.estimators
    assert len(c.per_seed) == 9 and set(c.per_seed["seed"]) == {0, 1, 2}
    hand_1 = Run.open(out / "seed-1" / "hand").metrics()
    curve = c.curves.query("seed == 1 and estimator == 'hand'")
    assert curve["test_elbo"].tolist() == [r["test_elbo"] for r in hand_1] and len(c.curves) == 9
    assert c.histories["hand"][1] == hand_1  # the records report.figures.curves draws
    diffs = c.differences.set_index(["estimator", "metric"])
    trace = next(r for r in summary["estimators"] if r["estimator"] == "trace")
    assert diffs.loc[("trace", "test_elbo"), "diff"] == trace["test_elbo_diff"]
    assert diffs.loc[("trace", "test_elbo"), "lo"] == trace["test_elbo_diff_lo"]
    assert {"guide", "model"} <= set(c.gradients["group"])

    run = c.run("hand", seed=1)
    assert run.config.seed == 1 and run.config.estimator == "hand"
    assert run.metrics["test_elbo"].tolist() == [r["test_elbo"] for r in hand_1]
    saved = torch.load(out / "seed-1" / "hand" / "checkpoint.pt", weights_only=True)["module"]
    assert all(torch.equal(p, saved[n]) for n, p in run.module.state_dict().items())
    assert run.evaluation["test_elbo"] == next(r for r in summary["per_seed"]
                                               if r["seed"] == 1 and r["estimator"] == "hand")["test_elbo"]
    assert c.run("trace", seed=2).data is run.data  # the data set is loaded once for all runs
    assert repr(c).startswith(f"Comparison({out}: vae, 3 estimators × 3 seed(s)") and len(repr(c)) < 200
    assert "<table" in c._repr_html_() and repr(run).startswith("RestoredRun(") and "<table" in run._repr_html_()
    with pytest.raises(VaeError, match="compares trace, meanfield, hand, not 'iwae'"):
        c.run("iwae")
    with pytest.raises(VaeError, match="ran seeds 0, 1, 2, not 7"):
        c.run("trace", seed=7)


def test_a_single_seed_comparison_reads_back_with_no_paired_differences(compared):
    import vae_pyro as vp

    out, summary = compared
    c = vp.load_comparison(out)
    assert c.seeds == [summary["seed"]] and list(c.per_seed["estimator"]) == NAMES
    assert c.differences.empty and list(c.differences.columns) == ["estimator", "metric", "diff", "lo", "hi"]
    assert c.run("iwae").config.estimator == "iwae"


def test_load_comparison_refuses_what_is_not_a_finished_comparison(tmp_path):
    import vae_pyro as vp

    with pytest.raises(VaeError, match="holds no comparison"):
        vp.load_comparison(tmp_path)
    (tmp_path / "compare.json").write_text("{}")
    with pytest.raises(VaeError, match="did not finish .*--resume"):
        vp.load_comparison(tmp_path)


def test_several_k_give_an_estimate_each_and_a_resume_adds_only_the_new_one(tmp_path):
    """--k 10,20 evaluates each run at both K; --resume --k 10,20,40 keeps those two estimates (the same
    numbers) and adds K = 40, so a large-K column can follow a finished comparison."""
    out = tmp_path / "c"
    first = compare_and_report(dict(TINY), ["trace", "meanfield"], out, ks=(10, 20), grad_draws=3, loss_draws=3,
                               grad_batches=1)
    row = first["estimators"][0]
    assert {"test_is_log_likelihood_k10", "test_is_log_likelihood_k20_se"} <= set(row)
    report = (out / "report.md").read_text()
    assert "IS K=10" in report and "IS K=20" in report
    again = compare_and_report(dict(TINY), ["trace", "meanfield"], out, resume=True, ks=(10, 20, 40), grad_draws=3,
                               loss_draws=3, grad_batches=1)
    for before, after in zip(first["estimators"], again["estimators"]):
        for key in ("test_is_log_likelihood_k10", "test_is_log_likelihood_k20", "test_elbo"):
            assert after[key] == before[key]
        assert after["test_is_log_likelihood_k40"] > after["test_is_log_likelihood_k10"] - 1.0
    assert "IS K=40" in (out / "report.md").read_text()
    with pytest.raises(VaeError, match="--k must be distinct positive integers"):
        compare_and_report(dict(TINY), ["trace"], tmp_path / "bad", ks=(10, 10))
