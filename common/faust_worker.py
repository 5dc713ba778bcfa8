"""The project's ``faust.Worker``: the start-up heap frozen once start-up finished.

After start-up a Faust worker holds the modules, the app, the recovered tables or the restored
model: objects that live as long as the process. :func:`common.heap.freeze_startup_heap` moves them
to the permanent generation once Faust says start-up (and table recovery) finished, so full
collections stop walking them again and again: in the streams worker a full collection stops the
agent, in a learner it stops the update thread while it holds the GIL. ``gc_thresholds``, when a
subclass sets them, replace CPython's collection thresholds at the same moment.
:func:`common.logs.plain_worker` builds it without the terminal spinner.
"""

from __future__ import annotations

import gc

import faust

from common.heap import freeze_startup_heap


class FrozenHeapWorker(faust.Worker):
    #: collection thresholds set after the freeze (None: CPython's own)
    gc_thresholds: tuple[int, int, int] | None = None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        freeze_startup_heap()
        if self.gc_thresholds is not None:
            gc.set_threshold(*self.gc_thresholds)
