"""notebooks/genre_mix.ipynb is committed clean and runs top to bottom against a run the test builds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from run_fixture import build_run

nbformat = pytest.importorskip("nbformat", reason="needs the dev extras (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="needs the dev extras (nbformat, nbclient, ipykernel)")
ipykernel_spec = pytest.importorskip("ipykernel.kernelspec", reason="needs the dev extras")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "genre_mix.ipynb"
KERNEL = "sdf-test-python"


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this very interpreter, in a temp dir that only this test's kernel search sees."""
    prefix = tmp_path / "jupyter"
    ipykernel_spec.install(kernel_name=KERNEL, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
    return KERNEL


def execute(run: Path, tmp_path: Path, kernel: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("SDF_RUN", str(run))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))  # keep datasets' cache out of ~
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return [
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    ]


def test_notebook_runs_on_a_full_run(tmp_path: Path, venv_kernel: str, monkeypatch: pytest.MonkeyPatch):
    run = build_run(tmp_path / "corpus")
    text = "\n".join(execute(run, tmp_path, venv_kernel, monkeypatch))
    assert f"run: {run.resolve()}" in text
    assert "corpus.parquet:" in text and "rejected:" in text
    assert "essay" in text and "target" in text  # the genre mix table
    assert "rejected for" in text  # the rejects browser printed some
    assert "not available" not in text


def test_notebook_runs_on_a_dry_run(tmp_path: Path, venv_kernel: str, monkeypatch: pytest.MonkeyPatch):
    run = build_run(tmp_path / "corpus", artifacts=["config.toml", "sections.jsonl", "specs.parquet"])
    text = "\n".join(execute(run, tmp_path, venv_kernel, monkeypatch))
    assert "corpus.parquet: not available" in text
    assert "lengths: not available" in text and "rejects: not available" in text
    assert "specs (planned)" in text or "actual" in text
