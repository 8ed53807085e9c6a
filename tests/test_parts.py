"""`sdf generate RUN --shard i/n` sends disjoint parts of the plan; `sdf merge` joins them, paying nothing twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FIXTURE_CONSTITUTION, fast_config, run_sdf, sdf_env
from fake_anthropic import FakeAnthropic

N = 3


def planned(root: Path, seed: int = 7) -> Path:
    """A run planned with pool extensions and ideas (blocks of 4 specs), nothing sent."""
    root.mkdir(parents=True, exist_ok=True)
    config = fast_config(root, docs=22)
    text = config.read_text(encoding="utf-8").replace("brainstorm = false\nexpand_pools = false\n",
                                                      "ideas_per_request = 4\n")
    config.write_text(text.replace("seed = 7", f"seed = {seed}"), encoding="utf-8")
    result = run_sdf("build", "--constitution", FIXTURE_CONSTITUTION, "--config", config, "--out", root / "corpus",
                     "--name", "run", "--dry-run", cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "corpus" / "run"


def generate_ids(store: Path) -> set[str]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT spec_id FROM requests WHERE purpose = 'generate' AND status = 'ok'").fetchall()
    return {r[0] for r in rows}


def documents(run: Path) -> list[tuple[str, str]]:
    return [(d["doc_id"], d["text"]) for d in pq.read_table(run / "documents.parquet").to_pylist()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    """The same plan generated on one machine."""
    run = planned(tmp_path_factory.mktemp("one"))
    with FakeAnthropic() as fake:
        result = run_sdf("generate", run, "--no-progress", cwd=run, env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    return documents(run)


def test_shards_send_disjoint_parts_and_merge_pays_nothing_again(tmp_path: Path, reference: list) -> None:
    run = planned(tmp_path)
    parts = [run / "parts" / f"{i}-of-{N}" for i in range(N)]
    with FakeAnthropic() as fake:
        env = sdf_env(fake.base_url)
        for i in range(N):
            result = run_sdf("generate", run, "--shard", f"{i}/{N}", "--no-progress", cwd=tmp_path, env=env)
            assert result.returncode == 0, result.stderr
        sent = [generate_ids(p / "store.sqlite") for p in parts]
        assert all(sent) and sum(map(len, sent)) == len(set().union(*sent)) == len(reference)  # disjoint, complete
        before = len(fake.log)
        again = run_sdf("generate", run, "--shard", f"1/{N}", "--no-progress", cwd=tmp_path, env=env)
        assert again.returncode == 0 and len(fake.log) == before  # reproducible: nothing new to send

        merged = run_sdf("merge", *parts, "--into", run, cwd=tmp_path)
        assert merged.returncode == 0, merged.stderr
        assert f"{len(reference)} of {len(reference)} planned specs" in merged.stdout
        assert "0 conflicting answers" in merged.stdout
        assert documents(run) == reference  # document for document, as one machine makes them
        resumed = run_sdf("generate", run, "--no-progress", cwd=tmp_path, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert len(fake.log) == before  # the merged ledger answers every request of the whole plan
    assert documents(run) == reference


def test_merge_refuses_a_part_of_another_plan(tmp_path: Path) -> None:
    run, other = planned(tmp_path / "a"), planned(tmp_path / "b", seed=8)
    with FakeAnthropic() as fake:
        result = run_sdf("generate", other, "--shard", "0/2", "--no-progress", cwd=tmp_path,
                         env=sdf_env(fake.base_url))
    assert result.returncode == 0, result.stderr
    merged = run_sdf("merge", other / "parts" / "0-of-2", "--into", run, cwd=tmp_path)
    assert merged.returncode == 2
    lines = merged.stderr.strip().splitlines()
    assert len(lines) == 1 and "other settings" in lines[0] and "[run].seed" in lines[0]
    assert not (run / "documents.parquet").exists()


@pytest.mark.parametrize("shard", ["3/3", "1", "-1/2", "a/b"])
def test_a_bad_shard_is_one_line(tmp_path: Path, shard: str) -> None:
    run = planned(tmp_path)
    result = run_sdf("generate", run, "--shard", shard, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --shard must be i/n with 0 <= i < n (e.g. 0/4), not {shard!r}"]
