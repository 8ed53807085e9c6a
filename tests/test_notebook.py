"""notebooks/genre_mix.ipynb is committed clean and runs top to bottom against a run the test builds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from report_build import FAILING_GENRE

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
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))  # the kernel imports this checkout's sdf
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


def test_notebook_runs_on_a_full_run(built_run: Path, tmp_path: Path, venv_kernel: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(execute(built_run, tmp_path, venv_kernel, monkeypatch))
    assert f"run: {built_run.resolve()}" in text
    assert "corpus.parquet:" in text and "rejected:" in text
    assert "not available" not in text
    # the genre mix against plan.json's targets: the planner's whole mix, not the two overridden weights
    assert re.search(r"^admirable_ai_story +target +8\.0% +actual", text, flags=re.MULTILINE)
    assert re.search(rf"^{FAILING_GENRE} +target +4\.0% +actual +0\.0% +\(0 docs\)", text, flags=re.MULTILINE)
    assert "rejected for 'judge_low'" in text  # the rejects browser printed the most common reason


def test_notebook_runs_on_a_dry_run(dry_run: Path, tmp_path: Path, venv_kernel: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(execute(dry_run, tmp_path, venv_kernel, monkeypatch))
    assert "corpus.parquet: not available" in text and "specs.parquet: 60 rows" in text
    assert "lengths: not available" in text and "rejects: not available" in text
    assert re.search(r"^admirable_ai_story +target +8\.0% +actual", text, flags=re.MULTILINE)


def test_notebook_runs_on_an_advice_run(advice_run: Path, tmp_path: Path, venv_kernel: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(execute(advice_run, tmp_path, venv_kernel, monkeypatch))
    assert "chats.parquet: 8 rows" in text and "specs.parquet: 8 rows" in text
    assert re.search(r"^\w+ +target +— +actual +\d", text, flags=re.MULTILINE)  # a temptation, no target
    assert "lengths: not available" not in text
