"""The documentation: the site builds without a warning (``mkdocs build --strict``: every link, every
API page from the docstrings), its estimator table is made from the estimator records, and the three
notebooks run top to bottom in a fresh kernel."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ["quickstart", "own-model", "load-comparison"]


def test_the_site_builds_without_a_warning(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert "iwae-disarm" in (tmp_path / "site" / "estimators" / "index.html").read_text()
    assert "load_comparison" in (tmp_path / "site" / "api" / "index.html").read_text()


def test_the_estimator_page_gets_the_records_table():
    from vae_pyro.report.markdown import estimator_table

    hook = runpy.run_path(str(ROOT / "docs" / "hooks.py"))["on_page_markdown"]
    page = hook((ROOT / "docs" / "estimators.md").read_text())
    assert estimator_table() in page and "<!-- estimator-table -->" not in page


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebooks_run(tmp_path, name):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "docs" / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
