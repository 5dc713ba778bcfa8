"""LETOR (LibSVM + ``.query`` group file) loader: real query-grouped lists with graded relevance.

Format (as LightGBM's ``examples/lambdarank``): each line ``label idx:value idx:value ...``
with 1-based feature indices; the ``.query`` file has one group size per line, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import StreamrankError


@dataclass(frozen=True)
class LetorQuery:
    """One query's candidate documents."""

    qid: int
    doc_ids: tuple[str, ...]
    features: np.ndarray  # float32 [n_docs, n_features]
    relevance: np.ndarray  # int [n_docs], 0..max_grade


@dataclass(frozen=True)
class LetorDataset:
    queries: tuple[LetorQuery, ...]
    n_features: int
    max_grade: int

    def __len__(self) -> int:
        return len(self.queries)

    def split(self, test_fraction: float, seed: int) -> tuple["LetorDataset", "LetorDataset"]:
        """A seeded split by query (never splits one query's documents)."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.queries))
        n_test = max(1, int(round(test_fraction * len(order))))
        test_idx, train_idx = set(order[:n_test].tolist()), order[n_test:]
        train = tuple(self.queries[i] for i in sorted(train_idx.tolist()))
        test = tuple(self.queries[i] for i in sorted(test_idx))
        return (LetorDataset(train, self.n_features, self.max_grade),
                LetorDataset(test, self.n_features, self.max_grade))


class LetorFormatError(StreamrankError, ValueError):
    """A malformed LibSVM line or a group file that does not match the documents."""


def default_query_path(libsvm_path: str | Path) -> Path:
    return Path(f"{libsvm_path}.query")


def load_letor(path: str | Path, query_path: str | Path | None = None, n_features: int | None = None) -> LetorDataset:
    """Parse a LibSVM ranking file and its group file into per-query dense arrays."""
    path = Path(path)
    query_path = Path(query_path) if query_path else default_query_path(path)
    labels: list[int] = []
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    max_index = 0
    with path.open() as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            head, *pairs = line.split()
            try:
                labels.append(int(float(head)))
                idx = np.fromiter((int(p.split(":", 1)[0]) for p in pairs), dtype=np.int64, count=len(pairs))
                val = np.fromiter((float(p.split(":", 1)[1]) for p in pairs), dtype=np.float32, count=len(pairs))
            except (ValueError, IndexError) as exc:
                raise LetorFormatError(f"{path}:{line_no}: {exc}") from None
            if len(idx) and idx.min() < 1:
                raise LetorFormatError(f"{path}:{line_no}: feature indices are 1-based")
            rows.append((idx, val))
            if len(idx):
                max_index = max(max_index, int(idx.max()))
    n_features = n_features or max_index
    dense = np.zeros((len(rows), n_features), dtype=np.float32)
    for r, (idx, val) in enumerate(rows):
        keep = idx <= n_features
        dense[r, idx[keep] - 1] = val[keep]
    sizes = [int(s) for s in query_path.read_text().split()]
    if sum(sizes) != len(rows):
        raise LetorFormatError(f"{query_path}: group sizes sum to {sum(sizes)} but {path} has {len(rows)} documents")
    relevance = np.asarray(labels, dtype=np.int64)
    queries, start = [], 0
    for qid, size in enumerate(sizes):
        sl = slice(start, start + size)
        queries.append(LetorQuery(qid, tuple(f"q{qid}-d{j}" for j in range(size)), dense[sl], relevance[sl]))
        start += size
    return LetorDataset(tuple(queries), n_features, int(relevance.max(initial=0)))
