"""Freeze a long-running process's start-up heap (the streams worker and the reranker use it).

After start-up a worker holds hundreds of thousands of objects that live as long as it does
(torch, Faust, Feast, pydantic, the models, recovered tables). A full collection walks every
tracked object and stops every thread while it does; ``gc.freeze()`` moves them to the
permanent generation, so later collections only walk what the process allocated since (frozen
objects are not freed either, which is what they would be anyway).
``bench/serving_costs.py`` measures a full collection before and after.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, freeze what is left, and return how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
