"""Turn an impression plus its collected feedback into a :class:`LabeledList` (pure).

The example id is a hash of the impression's event id, so any re-delivery of the same joined
example (a worker restart, a rebalance, a replay) carries the same id and learners can apply
it effectively once.
"""

from __future__ import annotations

import hashlib

from streams.events import LABELED_LIST_SCHEMA, Impression, ItemLabels, JoinInfo, LabeledList
from streams.rewards import ItemOutcome, ListOutcome, RewardWeights, item_reward, list_reward, query_satisfaction


def example_id_for(impression: Impression) -> str:
    return hashlib.sha1(f"{impression.request_id}\x00{impression.event_id}".encode()).hexdigest()


def label_impression(impression: Impression, outcome: ListOutcome, weights: RewardWeights, join: JoinInfo) -> LabeledList:
    labels = []
    for item in impression.items:
        got = outcome.items.get(item.item_id, ItemOutcome())
        labels.append(ItemLabels(item_id=item.item_id, position=item.position, click=got.click,
                                 long_view=got.long_view, play_time_ms=got.play_time_ms, like=got.like,
                                 follow=got.follow, share=got.share,
                                 reward=item_reward(got, item.duration_ms, weights)))
    shown = [outcome.items.get(item.item_id, ItemOutcome()) for item in impression.items]
    return LabeledList(
        schema=LABELED_LIST_SCHEMA,
        example_id=example_id_for(impression),
        request_id=impression.request_id,
        impression=impression,
        labels=labels,
        list_reward=list_reward([lab.reward for lab in labels], [lab.position for lab in labels]),
        query_reward=query_satisfaction(shown, outcome.reformulated, weights),
        reformulated=outcome.reformulated,
        join=join,
    )
