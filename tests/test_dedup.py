"""Exact and near-duplicate removal, checked against Jaccard similarities computed exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sdf.config import DedupConfig
from sdf.steps.dedup.clusters import (
    candidate_pairs,
    candidate_probability,
    deduplicate,
    estimated_jaccard,
    find_duplicates,
)
from sdf.steps.dedup.minhash import minhash_signatures, normalize_text, shingle_hashes

VOCAB = [f"w{i}" for i in range(5000)]


def shingles(text: str, k: int = 5) -> set[tuple[str, ...]]:
    words = normalize_text(text).split()
    return {tuple(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def base_words(rng: random.Random, n: int = 300) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def edited(words: list[str], target: float, rng: random.Random) -> list[str]:
    """Replace words spaced 5 apart: each replacement swaps 5 shingles, so J = (n-5m)/(n+5m)."""
    n = len(words) - 4
    m = round(n * (1 - target) / (5 * (1 + target)))
    out = list(words)
    for pos in rng.sample(range(0, len(words), 5), m):
        out[pos] = f"new{rng.randrange(10**9)}"
    return out


def corpus_with_pairs(targets: list[float], pairs_per_target: int, seed: int = 7) -> tuple[list[dict], list]:
    rng = random.Random(seed)
    docs: list[dict] = []
    pairs = []
    for target in targets:
        for _ in range(pairs_per_target):
            a = base_words(rng)
            b = edited(a, target, rng)
            ia, ib = len(docs), len(docs) + 1
            docs.append({"doc_id": f"d{ia:04d}", "text": " ".join(a)})
            docs.append({"doc_id": f"d{ib:04d}", "text": " ".join(b)})
            pairs.append((ia, ib, jaccard(docs[ia]["text"], docs[ib]["text"])))
    return docs, pairs


def test_lsh_parameters_follow_the_stated_s_curve() -> None:
    cfg = DedupConfig()
    assert (cfg.num_perm, cfg.bands, cfg.rows, cfg.threshold) == (128, 21, 6, 0.75)
    assert candidate_probability(0.8, cfg.bands, cfg.rows) >= 0.99
    assert candidate_probability(0.3, cfg.bands, cfg.rows) < 0.02
    assert candidate_probability(0.5, cfg.bands, cfg.rows) < 0.3
    with pytest.raises(ValueError, match="bands"):
        DedupConfig(bands=30, rows=6)


def test_pairs_just_above_jaccard_085_merge_at_least_98_percent_of_the_time() -> None:
    docs, pairs = corpus_with_pairs([0.86], 200, seed=7)  # a 0.8 cut on the estimate merges 99.0% of these
    result = deduplicate(docs)
    dropped = {r["doc_id"]: r["duplicate_of"] for r in result.rejected}
    high = [(a, b) for a, b, j in pairs if j >= 0.85]
    merged = sum(dropped.get(docs[b]["doc_id"]) == docs[a]["doc_id"] for a, b in high)
    assert len(high) == 200 and merged / len(high) >= 0.995


def test_normalisation_ignores_case_punctuation_and_spacing() -> None:
    assert normalize_text("  Hello,   WORLD!\n“Quoted” — text…  ") == "hello world quoted text"
    assert normalize_text("ﬁne Ｆｕｌｌ") == "fine full"  # NFKC folds ligatures and full-width forms


def test_shingle_hashes_match_the_exact_shingle_sets() -> None:
    rng = random.Random(1)
    texts = [" ".join(rng.choice(VOCAB[:50]) for _ in range(rng.randrange(0, 40))) for _ in range(30)]
    texts += ["One, two! three", "", "a b c d e"]
    hashes, offsets = shingle_hashes(texts, 5)
    assert len(offsets) == len(texts) + 1
    for i, text in enumerate(texts):
        mine = hashes[offsets[i] : offsets[i + 1]]
        words = normalize_text(text).split()
        expected = shingles(text) if words else set()
        assert len(mine) == (max(len(words) - 4, 1) if words else 0)
        assert len(set(mine.tolist())) == len(expected)
    # equal shingles hash equally across documents, so the hash sets give the same Jaccard
    for i in range(0, 30, 2):
        a = set(hashes[offsets[i] : offsets[i + 1]].tolist())
        b = set(hashes[offsets[i + 1] : offsets[i + 2]].tolist())
        if texts[i] and texts[i + 1]:
            assert len(a & b) / len(a | b) == pytest.approx(jaccard(texts[i], texts[i + 1]))


def test_signatures_do_not_depend_on_batching_or_threads() -> None:
    docs, _ = corpus_with_pairs([0.9], 10)
    texts = [d["text"] for d in docs]
    one, keys_one = minhash_signatures(texts, DedupConfig(batch_docs=1000, workers=1))
    many, keys_many = minhash_signatures(texts, DedupConfig(batch_docs=3, workers=3))
    assert np.array_equal(one, many) and np.array_equal(keys_one, keys_many)
    assert one.shape == (len(texts), 128) and one.dtype == np.uint32


def test_estimates_track_exact_jaccard() -> None:
    docs, pairs = corpus_with_pairs([0.3, 0.5, 0.7, 0.9], 15)
    sigs, _ = minhash_signatures([d["text"] for d in docs])
    est = estimated_jaccard(sigs, np.array([(a, b) for a, b, _ in pairs]))
    exact = np.array([j for _, _, j in pairs])
    assert abs(float((est - exact).mean())) < 0.02
    assert float(np.abs(est - exact).max()) < 0.15  # > 3 standard deviations at 128 permutations


def test_pairs_at_high_jaccard_merge_and_low_never_do() -> None:
    docs, pairs = corpus_with_pairs([0.3, 0.5, 0.9, 0.95], 20)
    for _, _, j in pairs:  # the construction lands where intended
        assert any(abs(j - t) < 0.03 for t in (0.3, 0.5, 0.9, 0.95))
    result = deduplicate(docs)
    dropped = {r["doc_id"]: r["duplicate_of"] for r in result.rejected}
    for a, b, j in pairs:
        ida, idb = docs[a]["doc_id"], docs[b]["doc_id"]
        if j >= 0.9:
            assert dropped.get(idb) == ida, f"pair at J={j:.3f} not merged"
        if j <= 0.5:
            assert ida not in dropped and idb not in dropped, f"pair at J={j:.3f} merged"
    assert all(r["reason"] == "near_duplicate" and r["stage"] == "dedup" for r in result.rejected)
    assert result.cluster_sizes == [2] * 40
    assert result.counts["near_duplicate"] == 40 and result.counts["kept"] == len(docs) - 40


def test_exact_duplicates_ignore_case_and_punctuation() -> None:
    text = " ".join(base_words(random.Random(3), 120))
    docs = [
        {"doc_id": "b", "text": text},
        {"doc_id": "a", "text": text.upper().replace(" ", " ,  ") + "!"},
        {"doc_id": "c", "text": " ".join(base_words(random.Random(4), 120))},
    ]
    result = deduplicate(docs)
    assert [d["doc_id"] for d in result.kept] == ["a", "c"]  # smallest doc_id wins a tie
    (row,) = result.rejected
    assert (row["doc_id"], row["reason"], row["duplicate_of"]) == ("b", "exact_duplicate", "a")
    assert row["text"] == text
    assert result.cluster_sizes == [2]


def test_keeper_is_best_quality_then_smallest_id_whatever_the_order() -> None:
    rng = random.Random(5)
    a = base_words(rng)
    texts = [" ".join(edited(a, 0.95, rng)) for _ in range(4)] + [" ".join(a)]
    docs = [{"doc_id": f"x{i}", "text": t, "quality_score": q}
            for i, (t, q) in enumerate(zip(texts, [0.2, None, 0.9, 0.9, 0.5], strict=True))]
    for order in (docs, docs[::-1], sorted(docs, key=lambda d: d["text"])):
        result = deduplicate(order)
        assert [d["doc_id"] for d in result.kept] == ["x2"]
        assert {r["duplicate_of"] for r in result.rejected} == {"x2"}
        assert result.cluster_sizes == [5]


def test_input_order_is_kept_and_empty_input_works() -> None:
    docs, _ = corpus_with_pairs([0.3], 5)
    result = deduplicate(docs)
    assert [d["doc_id"] for d in result.kept] == [d["doc_id"] for d in docs]
    empty = deduplicate([])
    assert (empty.kept, empty.rejected, empty.cluster_sizes) == ([], [], [])


def test_documents_without_words_are_only_exact_duplicates() -> None:
    docs = [{"doc_id": "e1", "text": "..."}, {"doc_id": "e2", "text": ""}, {"doc_id": "w", "text": "word"}]
    result = deduplicate(docs)
    assert [(r["doc_id"], r["reason"]) for r in result.rejected] == [("e2", "exact_duplicate")]
    sigs, _ = minhash_signatures([d["text"] for d in docs])
    assert len(candidate_pairs(sigs)) == 0


def test_banding_finds_exactly_the_pairs_datasketch_lsh_buckets_together() -> None:
    from datasketch import LeanMinHash, MinHashLSH

    cfg = DedupConfig()
    docs, _ = corpus_with_pairs([0.5, 0.7, 0.8, 0.9], pairs_per_target=15, seed=3)
    signatures, _ = minhash_signatures([d["text"] for d in docs], cfg)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    for i, sig in enumerate(signatures):
        lsh.insert(i, LeanMinHash(seed=cfg.seed, hashvalues=sig, scheme="affine32"))
    expected = set()
    for i, sig in enumerate(signatures):
        expected |= {(min(i, j), max(i, j)) for j in lsh.query(LeanMinHash(seed=cfg.seed, hashvalues=sig,
                                                                              scheme="affine32")) if j != i}
    found = {tuple(p) for p in candidate_pairs(signatures, cfg).tolist()}
    assert expected and found == expected


def test_hashing_in_bounded_chunks_gives_the_same_hashes(monkeypatch) -> None:
    import sdf.steps.dedup.minhash as minhash

    texts = [" ".join(base_words(random.Random(i), 80)) for i in range(30)] + ["", "short text"]
    whole = shingle_hashes(texts)
    sig, keys = minhash_signatures(texts)
    monkeypatch.setattr(minhash, "HASH_CHARS", 1500)  # a few texts per pass
    chunked = shingle_hashes(texts)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    sig2, keys2 = minhash_signatures(texts)
    assert np.array_equal(sig, sig2) and np.array_equal(keys, keys2)


def _reference_drops(ids: list[str], keys: np.ndarray, sigs: np.ndarray, scores: list[float],
                     cfg: DedupConfig) -> dict[int, tuple[str, int]]:
    """The plain-Python union-find the numpy version replaced: row -> (reason, keeper row)."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    first: dict[int, int] = {}
    for i, k in enumerate(keys.tolist()):
        parent[i] = first.setdefault(k, i)
    reps = np.flatnonzero(np.arange(len(ids)) == np.array(parent))
    pairs = reps[candidate_pairs(sigs[reps], cfg)]
    for a, b in pairs[estimated_jaccard(sigs, pairs) >= cfg.threshold].tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    clusters: dict[int, list[int]] = {}
    for i in range(len(ids)):
        clusters.setdefault(find(i), []).append(i)
    out = {}
    for members in clusters.values():
        keeper = min(members, key=lambda i: (-scores[i], ids[i]))
        for i in members:
            if i != keeper:
                out[i] = ("exact_duplicate" if keys[i] == keys[keeper] else "near_duplicate", keeper)
    return out


def test_clusters_match_a_plain_union_find_through_chains_and_exact_copies() -> None:
    """Chains (a~b~c with a and c too far apart to merge directly), exact copies of chain members,
    and singletons, shuffled: the same drops and keepers as the plain algorithm."""
    rng = random.Random(11)
    texts: list[str] = []
    for _ in range(30):
        a = base_words(rng)
        b = edited(a, 0.85, rng)
        c = edited(b, 0.85, rng)
        texts += [" ".join(a), " ".join(b), " ".join(c)]
        if rng.random() < 0.5:
            texts.append(" ".join(rng.choice([a, b, c])).upper())  # an exact copy, in other case
    texts += [" ".join(base_words(rng)) for _ in range(40)]
    rng.shuffle(texts)
    ids = [f"d{i:03d}" for i in range(len(texts))]
    scores = [rng.choice([0.0, 0.5, 1.0]) for _ in texts]
    cfg = DedupConfig()
    sigs, keys = minhash_signatures(texts, cfg)
    found = find_duplicates(ids, keys, sigs, np.array(scores), cfg)
    expected = _reference_drops(ids, keys, sigs, scores, cfg)
    assert {i: (reason, keeper) for i, (reason, _, keeper) in found.drops.items()} == expected
    assert any(reason == "exact_duplicate" for reason, _ in expected.values())
    assert max(found.cluster_sizes) >= 3  # chains merged transitively
    assert found.counts["kept"] == len(texts) - len(expected)
