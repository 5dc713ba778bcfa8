"""Offline parquet for the Feast repo, generated from the real data in ../shared/data (never committed).

Each file has the entity key, the features of its feature view (see
``feature_store/repo/definitions.py``) and an ``event_timestamp``. Profile/content data has
no time of its own, so every row gets one fixed timestamp (:data:`PROFILE_TS`); the streaming
stats files start empty with the right schema (the stats agent fills the online store; a push
with ``PushMode.ONLINE_AND_OFFLINE`` would append here).

Ids follow the event producers: KuaiRand users ``kr<user_id>`` and videos ``kv<video_id>``,
OBD users ``obdu-<blake2b of the four user features>`` (simulator/obd.py), OBD items
``<item_id>``, LETOR documents ``q<qid>-d<j>`` (simulator/letor.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from common.paths import shared_data
from simulator.letor import load_letor
from simulator.obd import USER_FEATURES

#: The one timestamp of all profile/content rows (before any simulated event time).
PROFILE_TS = datetime(2025, 1, 1, tzinfo=timezone.utc)

ACTIVITY_LEVEL = {"full_active": 5, "high_active": 4, "middle_active": 3, "low_active": 2, "single_low_active": 2,
                  "30day_retention": 1, "2_14_day_new": 1, "day_new": 0, "single_day_new": 0}

ITEM_STATS_COLUMNS = ("impressions", "clicks", "long_views", "watch_time_ms", "click_rate", "long_view_rate",
                      "mean_watch_time_ms", "last_ts")
QUERY_STATS_COLUMNS = ("requests", "clicked_lists", "reformulations", "satisfaction_sum", "list_reward_sum",
                       "click_through_rate", "reformulation_rate", "satisfaction", "mean_list_reward", "last_ts")


@dataclass(frozen=True)
class DataPaths:
    """Where the real inputs are."""

    root: Path

    @property
    def kuairand(self) -> Path:
        return self.root / "kuairand"

    @property
    def letor(self) -> Path:
        return self.root / "letor" / "rank.train"

    @property
    def obd_logs(self) -> list[Path]:
        return sorted(self.root.glob("obd/*/*/*.csv"))


def default_data_root() -> Path:
    return shared_data()


def _with_ts(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["event_timestamp"] = pd.Timestamp(PROFILE_TS)
    return df


def user_profile_frame(paths: DataPaths, limit: int | None = None) -> pd.DataFrame:
    raw = pd.read_csv(paths.kuairand / "user_features_pure.csv", nrows=limit)
    counts = raw[["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]].clip(lower=0)
    level = raw["user_active_degree"].map(ACTIVITY_LEVEL).fillna(-1).astype("int64")
    vector = np.column_stack([np.log1p(counts.to_numpy(dtype=np.float64)),
                              raw["is_lowactive_period"].clip(0, 1), raw["is_live_streamer"].clip(0, 1),
                              raw["is_video_author"].clip(0, 1), level.clip(lower=0) / 5.0]).astype(np.float32)
    df = pd.DataFrame({
        "user_id": "kr" + raw["user_id"].astype(str),
        "activity": raw["user_active_degree"].fillna("UNKNOWN").astype(str),
        "activity_level": level,
        "is_live_streamer": raw["is_live_streamer"].clip(0, 1).astype("int64"),
        "is_video_author": raw["is_video_author"].clip(0, 1).astype("int64"),
        "follow_user_num": raw["follow_user_num"].astype("int64"),
        "fans_user_num": raw["fans_user_num"].astype("int64"),
        "friend_user_num": raw["friend_user_num"].astype("int64"),
        "register_days": raw["register_days"].astype("int64"),
        "profile_vector": list(vector),
    })
    return _with_ts(df)


def obd_user_id(user_features: tuple[str, ...]) -> str:
    """The user id simulator/obd.py gives an OBD row (hash of its four hashed user features)."""
    return "obdu-" + hashlib.blake2b("|".join(user_features).encode(), digest_size=6).hexdigest()


def obd_user_frame(paths: DataPaths, limit: int | None = None) -> pd.DataFrame:
    frames = [pd.read_csv(p, usecols=list(USER_FEATURES), dtype=str, nrows=limit) for p in paths.obd_logs
              if p.name != "item_context.csv"]
    users = pd.concat(frames).drop_duplicates().reset_index(drop=True)
    users.insert(0, "user_id", [obd_user_id(tuple(row)) for row in users[list(USER_FEATURES)].itertuples(index=False)])
    return _with_ts(users.drop_duplicates("user_id"))


def letor_document_frame(paths: DataPaths, limit: int | None = None) -> pd.DataFrame:
    dataset = load_letor(paths.letor)
    ids, vectors = [], []
    for q in dataset.queries:
        ids.extend(q.doc_ids)
        vectors.extend(q.features.astype(np.float32))
    df = pd.DataFrame({"item_id": ids, "features": vectors,
                       "nonzero": [int(np.count_nonzero(v)) for v in vectors]})
    return _with_ts(df.head(limit) if limit else df)


def kuairand_video_frame(paths: DataPaths, limit: int | None = None) -> pd.DataFrame:
    raw = pd.read_csv(paths.kuairand / "video_features_basic_pure.csv", nrows=limit)
    df = pd.DataFrame({
        "item_id": "kv" + raw["video_id"].astype(str),
        "duration_ms": raw["video_duration"].astype("float64"),
        "width": raw["server_width"].astype("float64"), "height": raw["server_height"].astype("float64"),
        "video_type": raw["video_type"].fillna("").astype(str), "upload_type": raw["upload_type"].fillna("").astype(str),
        "tag": raw["tag"].fillna("").astype(str), "author_id": raw["author_id"].astype("int64"),
    })
    return _with_ts(df)


def obd_item_frame(paths: DataPaths, limit: int | None = None) -> pd.DataFrame:
    # The uniform-random log's context (the bts one hashes the same items' features differently).
    contexts = sorted(paths.root.glob("obd/*/all/item_context.csv"), key=lambda p: p.parts[-3] != "random")
    if not contexts:
        raise FileNotFoundError(f"no obd/*/all/item_context.csv under {paths.root}")
    raw = pd.read_csv(contexts[0], nrows=limit)
    df = pd.DataFrame({"item_id": raw["item_id"].astype(str), "item_feature_0": raw["item_feature_0"].astype("float64")})
    for i in (1, 2, 3):
        df[f"item_feature_{i}"] = raw[f"item_feature_{i}"].astype(str)
    return _with_ts(df)


def empty_stats_frame(key: str, columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame({key: pd.Series(dtype=str), **{c: pd.Series(dtype="float64") for c in columns}})
    df["event_timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
    return df


BUILDERS = {
    "user_profile": user_profile_frame,
    "obd_user": obd_user_frame,
    "letor_document": letor_document_frame,
    "kuairand_video": kuairand_video_frame,
    "obd_item": obd_item_frame,
}


def write_offline_data(target: Path, data_root: Path | None = None, limit: int | None = None,
                       progress: bool = True) -> dict[str, int]:
    """Write every parquet file of the repo into ``target``; returns rows per file.

    ``limit`` caps the rows read from each real file (small slices for tests).
    """
    target.mkdir(parents=True, exist_ok=True)
    paths = DataPaths(Path(data_root) if data_root else default_data_root())
    if not paths.root.exists():
        raise FileNotFoundError(f"real data not found at {paths.root}")
    rows: dict[str, int] = {}
    for name, build in tqdm(BUILDERS.items(), desc="offline parquet", disable=not progress):
        df = build(paths, limit)
        df.to_parquet(target / f"{name}.parquet", index=False)
        rows[name] = len(df)
    for name, key, columns in (("item_stats", "item_id", ITEM_STATS_COLUMNS),
                               ("query_stats", "query_id", QUERY_STATS_COLUMNS)):
        path = target / f"{name}.parquet"
        if not path.exists():  # keep what a ONLINE_AND_OFFLINE push appended
            empty_stats_frame(key, columns).to_parquet(path, index=False)
        rows[name] = len(pd.read_parquet(path))
    return rows


