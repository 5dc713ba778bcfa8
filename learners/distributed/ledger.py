"""Effectively-once across ranks: each rank's bookkeeping since the restore, merged into one checkpoint.

Every rank restores the same checkpoint (the model and the runtime bookkeeping of *every*
partition: applied offsets, recent example ids, the applied count and id digest). At each
checkpoint a rank writes what it did since then to a sidecar (:func:`rank_delta`: the offsets of
the partitions it owns, its recent ids, the applied count and digest *deltas*); after a barrier,
rank 0 folds them into the restored base (:func:`merge`) and writes the one checkpoint. The
partitions are disjoint (:func:`learners.distributed.group.owned_partitions`), so the merged
offsets are exact, and ``applied``/``digest`` prove each example was applied once over all ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DIGEST_MOD = 1 << 64
COUNTERS = ("applied", "skipped_offsets", "skipped_ids", "dead_lettered")


def rank_delta(base: dict[str, Any], now: dict[str, Any], owned: set[str]) -> dict[str, Any]:
    """This rank's bookkeeping since ``base`` (both :meth:`LearnerRuntime.runtime_meta` documents)."""
    base_ids = set(base.get("recent_ids", []))
    return {"offsets": {tp: off for tp, off in now.get("offsets", {}).items() if tp in owned},
            "recent_ids": [i for i in now.get("recent_ids", []) if i not in base_ids],
            "digest": str((int(now.get("digest", "0")) - int(base.get("digest", "0"))) % DIGEST_MOD),
            **{k: int(now.get(k, 0)) - int(base.get(k, 0)) for k in COUNTERS}}


def merge(base: dict[str, Any], deltas: list[dict[str, Any]], batches: int, recent: int) -> dict[str, Any]:
    """The runtime meta of the checkpoint: ``base`` plus every rank's delta (``recent``: ids kept)."""
    offsets = dict(base.get("offsets", {}))
    ids = list(base.get("recent_ids", []))
    digest = int(base.get("digest", "0"))
    out: dict[str, Any] = {k: int(base.get(k, 0)) for k in COUNTERS}
    for delta in deltas:
        for tp, off in delta["offsets"].items():
            offsets[tp] = max(int(off), offsets.get(tp, -1))
        ids.extend(delta["recent_ids"])
        digest = (digest + int(delta["digest"])) % DIGEST_MOD
        for k in COUNTERS:
            out[k] += int(delta[k])
    out.update(offsets=dict(sorted(offsets.items())), recent_ids=ids[-recent:] if recent else [],
               digest=str(digest), batches=batches)
    return out


def write_sidecar(directory: Path, rank: int, doc: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"rank{rank}.json.tmp"
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, directory / f"rank{rank}.json")


def read_sidecars(directory: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((directory / f"rank{r}.json").read_text()) for r in range(world)]
