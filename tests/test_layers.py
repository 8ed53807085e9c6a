"""The layering ARCHITECTURE.md draws: steps import nothing above them, and the report has no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "sdf"
ABOVE_STEPS = ("sdf.executors", "sdf.run", "sdf.cli", "sdf.products")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-local imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_step_imports_the_executor_run_cli_or_products() -> None:
    steps = sorted((SRC / "steps").rglob("*.py"))
    assert len(steps) > 10  # the walk really found the steps
    bad = [f"{p.relative_to(SRC)}:{line} imports {mod}" for p in steps for line, mod in _imports(p)
           if any(_is_under(mod, above) for above in ABOVE_STEPS)]
    assert bad == []


def test_the_walk_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from sdf.run import reject_row\n    import sdf.executors.local\n", encoding="utf-8")
    assert [m for _, m in _imports(bad)] == ["sdf.run", "sdf.run.reject_row", "sdf.executors.local"]


def test_the_report_modules_import_no_circle() -> None:
    report = {p.stem: {m for _, m in _imports(p)} for p in (SRC / "report").glob("*.py")}
    for name, mods in report.items():
        for other in mods:
            if other.startswith("sdf.report.") and other.count(".") == 2:
                back = other.rsplit(".", 1)[1]
                assert f"sdf.report.{name}" not in report.get(back, set()), f"{name} <-> {back}"
    assert not any(m.startswith("sdf.steps.decontam") for m in report["rejects"])


def test_the_judge_filter_reads_its_score_as_a_joined_column() -> None:
    from sdf.steps.filters.judge import JudgeFilter

    docs = [{"doc_id": "a", "judge_score": 4.0, "judge_status": "ok"},
            {"doc_id": "b", "judge_score": 1.5, "judge_status": "ok"},
            {"doc_id": "c", "judge_score": None, "judge_status": "error"}]
    kept, dropped = JudgeFilter(3.0)(docs)
    assert kept == [{"doc_id": "a", "judge_score": 4.0, "quality_score": 4.0}]  # the status is not kept
    assert [(r["doc_id"], r["reason"], r["detail"]) for r in dropped] == [
        ("b", "judge_low", "score 1.5 < 3"), ("c", "judge_missing", "no score (request error)")]


def test_every_product_in_the_registry_declares_its_stages_in_pipeline_order() -> None:
    from sdf.config import PRODUCTS
    from sdf.products import REGISTRY, STAGE_NAMES, product

    assert tuple(REGISTRY) == PRODUCTS
    for name in REGISTRY:
        declared = [s.name for s in product(name).stages]
        assert declared == [s for s in STAGE_NAMES if s in declared], name
        for command in ("generate", "extract", "filter", "dedup", "pack", "report"):
            assert callable(product(name).stage(command)), (name, command)
