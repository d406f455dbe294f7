"""`vae-pyro compare` end to end on a tiny network."""

import csv
import json

import pytest

from vae_pyro.cli import main
from vae_pyro.errors import VaeError
from vae_pyro.lab.compare import compare

TINY = dict(hidden=(32,), z_dim=4, epochs=1, batch_size=256)
NAMES = ["trace", "meanfield", "hand", "score", "iwae"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    summary = compare(dict(TINY), NAMES, out, k=10, grad_draws=5, loss_draws=10, progress=False)
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


def test_resume_keeps_finished_estimators_and_refuses_another_list(compared, tmp_path):
    out, _ = compared
    before = {n: (out / n / "checkpoint.pt").stat().st_mtime_ns for n in NAMES}
    compare(dict(TINY), NAMES, out, resume=True, k=10, grad_draws=5, loss_draws=10, progress=False)
    assert {n: (out / n / "checkpoint.pt").stat().st_mtime_ns for n in NAMES} == before
    with pytest.raises(VaeError, match="already holds a comparison"):
        compare(dict(TINY), NAMES, out, progress=False)
    with pytest.raises(VaeError, match="cannot resume .* it compares trace,meanfield,hand,score,iwae"):
        compare(dict(TINY), ["trace"], out, resume=True, progress=False)


def test_bad_estimator_list_is_refused_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--estimators", "trace,bogus", "--out", str(tmp_path / "c")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--estimators must name distinct estimators" in err
    assert not (tmp_path / "c").exists()


def test_jobs_train_in_separate_processes_and_give_the_same_numbers(compared, tmp_path):
    """--jobs 2 trains each estimator in its own process (one thread each); the results equal one-by-one
    training to 1e-4 nats (bit for bit here; thread counts may change the last bits of a sum elsewhere)."""
    _, summary = compared
    parallel = compare(dict(TINY), ["trace", "meanfield"], tmp_path / "p", jobs=2, k=10, grad_draws=5,
                       loss_draws=10, progress=False)
    rows = {r["estimator"]: r for r in summary["estimators"]}
    for row in parallel["estimators"]:
        for key in ("test_elbo", "test_is_log_likelihood_k10"):
            assert row[key] == pytest.approx(rows[row["estimator"]][key], abs=1e-4)
