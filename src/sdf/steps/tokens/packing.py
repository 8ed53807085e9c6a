"""Packing strategies: plans of fixed-length rows as document pieces, computed from token lengths alone.

- `concat_rows` streams the documents and cuts the stream every seq_len tokens (only the last row pads);
- `bfd_rows` bins documents best-fit-decreasing within windows of BFD_WINDOW documents and never splits a
  document unless it is longer than seq_len; such a document fills whole rows and its tail opens the
  next bin, so every document stays contiguous in the token stream.

A row is a list of pieces (document, first token, count); the spool turns planned rows into tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from sdf.steps.tokens.spool import Piece

BFD_WINDOW = 8192  # documents binned together: bounds memory, costs a little fill at window edges

Row = list[Piece]


def concat_rows(order: Sequence[int], lengths: Sequence[int], seq_len: int) -> Iterator[Row]:
    """Documents in `order` back to back, cut every seq_len tokens; the last row may be short."""
    row: Row = []
    col = 0
    for doc in order:
        n, start = lengths[doc], 0
        while start < n:
            take = min(n - start, seq_len - col)
            row.append((doc, start, take))
            col += take
            start += take
            if col == seq_len:
                yield row
                row, col = [], 0
    if row:
        yield row


def bfd_units(docs: list[int], lengths: list[int], seq_len: int) -> list[list[Row]]:
    """Best-fit-decreasing bins for one window of documents, as units of rows that must stay together.

    A document longer than seq_len becomes whole rows plus a tail; the tail opens its own bin (no other
    tail may join it) and that bin follows the whole rows, so the document stays contiguous.
    """
    units: list[list[Row]] = []
    leading_rows: dict[int, list[Row]] = {}
    items: list[tuple[int, int, int, bool]] = []  # (length, doc, start, is_tail)
    for doc, n in zip(docs, lengths, strict=True):
        if n <= seq_len:
            items.append((n, doc, 0, False))
            continue
        whole = n // seq_len
        rows = [[(doc, i * seq_len, seq_len)] for i in range(whole)]
        if n == whole * seq_len:
            units.append(rows)
        else:
            leading_rows[doc] = rows
            items.append((n - whole * seq_len, doc, whole * seq_len, True))
    items.sort(key=lambda item: -item[0])

    bins: list[Row] = []
    bin_lead: list[int | None] = []
    free: list[int] = []
    by_space: list[list[int]] = [[] for _ in range(seq_len + 1)]  # open bins by free space
    open_count = np.zeros(seq_len + 1, dtype=np.int64)
    for n, doc, start, is_tail in items:
        chosen = -1
        if not is_tail:
            fits = np.flatnonzero(open_count[n:])
            if fits.size:
                space = n + int(fits[0])
                chosen = by_space[space].pop()
                open_count[space] -= 1
        if chosen < 0:
            chosen = len(bins)
            bins.append([])
            bin_lead.append(doc if is_tail else None)
            free.append(seq_len)
        bins[chosen].append((doc, start, n))
        free[chosen] -= n
        if free[chosen]:
            by_space[free[chosen]].append(chosen)
            open_count[free[chosen]] += 1
    for lead, pieces in zip(bin_lead, bins, strict=True):
        units.append((leading_rows[lead] if lead is not None else []) + [pieces])
    return units


def bfd_rows(
    order: Sequence[int], lengths: Sequence[int], seq_len: int, rng: np.random.Generator
) -> Iterator[Row]:
    """Bin each window of documents best-fit-decreasing, then emit its units in a seeded random order."""
    for begin in range(0, len(order), BFD_WINDOW):
        docs = list(order[begin : begin + BFD_WINDOW])
        units = bfd_units(docs, [lengths[d] for d in docs], seq_len)
        # shuffle units so rows do not come out sorted by document length
        for u in rng.permutation(len(units)).tolist():
            yield from units[u]
