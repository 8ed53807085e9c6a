"""`--executor ray` writes what the local executor writes: the same corpus, rejects and shards (make check-ray)."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, fast_config, run_sdf, sdf_env
from fake_anthropic import FakeAnthropic, document_genre, synthetic_reply

ray = pytest.importorskip("ray")

DUPLICATE_GENRES = ("faq", "essay")  # one and the same answer: exact duplicates
NEAR_GENRES = ("speech", "advice_column")  # one answer with a word or two changed: near duplicates
BASE = synthetic_reply({"messages": [{"role": "user", "content": "Commission: FAQ page, about 700 words"}]})
COPY = synthetic_reply({"messages": [{"role": "user", "content": "Commission: essay, about 600 words"}]})


def responder(params: dict[str, Any]) -> str:
    genre = document_genre(params)
    if genre in DUPLICATE_GENRES:
        return COPY
    if genre in NEAR_GENRES:
        words = BASE.split(" ")
        i = random.Random(str(params)).randrange(10, len(words) - 10)
        return " ".join(words[:i] + ["notably"] + words[i:])
    return synthetic_reply(params)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A documents run built end to end with the local executor."""
    root = tmp_path_factory.mktemp("ray")
    with FakeAnthropic(responder=responder) as fake:
        result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", fast_config(root, docs=48),
                         "--out", root / "corpus", "--name", "run", "--no-progress", cwd=root,
                         env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    return root / "corpus" / "run"


def _ray_copy(run: Path, to: Path) -> Path:
    copy = to / "run"
    shutil.copytree(run, copy)
    for name in ("filtered.parquet", "corpus.parquet", "shards", "rejected"):  # nothing local is left to reuse
        path = copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    config = copy / "config.toml"
    text = config.read_text(encoding="utf-8")
    assert "\nnum_cpus = 0\n" in text
    config.write_text(text.replace("\nnum_cpus = 0\n", "\nnum_cpus = 2\n"), encoding="utf-8")  # 2 cores in CI
    return copy


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_filter_dedup_and_pack_on_ray_equal_the_local_executor(local_run: Path, tmp_path: Path) -> None:
    copy = _ray_copy(local_run, tmp_path)
    for command in ("filter", "dedup", "pack"):
        result = run_sdf(command, copy, "--executor", "ray", *(["--no-progress"] if command != "dedup" else []),
                         cwd=tmp_path, timeout=280)
        assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    local, remote = _rows(local_run / "corpus.parquet"), _rows(copy / "corpus.parquet")
    assert [d["doc_id"] for d in remote] == [d["doc_id"] for d in local]
    assert remote == local  # texts too, with their renames and trimmed openers
    dropped = {(r["stage"], r["reason"]) for r in _rows_of_rejects(local_run)}
    assert {("dedup", "exact_duplicate"), ("dedup", "near_duplicate")} <= dropped  # the check has teeth
    assert _rows_of_rejects(copy) == _rows_of_rejects(local_run)

    import json

    manifests = [json.loads((r / "shards" / "manifest.json").read_text()) for r in (local_run, copy)]
    assert manifests[1]["tokens"] == manifests[0]["tokens"] > 0
    assert manifests[1]["pack_key"] == manifests[0]["pack_key"]
    for entry in manifests[0]["shards"]:  # token for token: every shard file is the same bytes
        assert (copy / "shards" / entry["path"]).read_bytes() == (local_run / "shards" / entry["path"]).read_bytes()
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (local_run, copy)]
    for key in ("stages", "dedup", "caps", "diversity"):
        assert metrics[1][key] == metrics[0][key], key


def _rows_of_rejects(run: Path) -> list[dict]:
    return [r for p in sorted((run / "rejected").glob("*.parquet")) for r in _rows(p)]


def test_band_key_grouping_finds_the_local_clusters() -> None:
    from sdf.config import DedupConfig, ExecutorConfig
    from sdf.executors.ray import session
    from sdf.executors.ray_dedup import find_duplicates as on_ray
    from sdf.steps.dedup.clusters import find_duplicates
    from sdf.steps.dedup.minhash import minhash_signatures

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(400)]
    bases = [[rng.choice(vocab) for _ in range(120)] for _ in range(40)]
    texts = []
    for i in range(300):  # variants of 40 texts: exact copies, one-word edits and heavier rewrites
        words = list(bases[i % 40])
        for _ in range(rng.choice([0, 0, 1, 3, 12])):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    cfg = DedupConfig()
    signatures, keys = minhash_signatures(texts, cfg)
    ids = [f"d{i:03d}" for i in range(len(texts))]
    scores = np.array([rng.choice([0.5, 0.7, 0.9]) for _ in texts])
    expected = find_duplicates(ids, keys, signatures, scores, cfg)
    with session(ExecutorConfig(kind="ray", num_cpus=2)):
        got = on_ray(ids, keys, signatures, scores, cfg)
    assert got == expected
    assert expected.counts["near_duplicate"] > 0 and expected.counts["exact_duplicate"] > 0


def test_without_ray_the_executor_is_a_one_line_error(local_run: Path, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n", encoding="utf-8")
    env = sdf_env()
    env["PYTHONPATH"] = f"{hide}:{env['PYTHONPATH']}"
    result = run_sdf("dedup", local_run, "--executor", "ray", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --executor ray needs Ray Data, which is not installed: pip install 'sdf[ray]'"]


def test_an_unknown_executor_is_refused(local_run: Path, tmp_path: Path) -> None:
    result = run_sdf("pack", local_run, "--executor", "spark", cwd=tmp_path)
    assert result.returncode == 2 and "spark" in result.stderr and "Traceback" not in result.stderr
    assert re.search(r"local|ray", result.stderr)
