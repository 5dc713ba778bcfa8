"""Serving passes as TorchScript functions: scripted once per process, run with no Python between their ops.

What: :func:`scripted` compiles a plain, type-annotated function with ``torch.jit.script`` the
first time it is asked for (~0.1-0.3 s, under a lock, the deprecation notice of ``torch.jit``
silenced) and keeps it for the process; :func:`run` calls it with the graph executor's
optimisations off. The graphs are pure functions of their arguments: the model's weights are
passed in at every call (e.g. :func:`learners.fusion.serving_graph.policy_params`), so a hot swap
needs no re-compilation and a graph can never run stale weights.

Why: in the server the scoring thread gives up the GIL around every eager torch op and must take
it back from the event loop and the Kafka client threads before the next one; a small network's
serving pass is dozens to hundreds of such ops. A scripted call releases the GIL once, runs all
its ops in the TorchScript interpreter, and takes the GIL back once. Optimisations off: the
profiling executor would re-specialise a graph for every new batch shape (a micro-batch of 1 to
B lists of varying lengths), a latency spike on the request that meets it; the plain interpreter
runs the same ops in the same order, so outputs equal the eager pass's.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

import torch

#: Whether :func:`run` lets the graph executor optimise (shape-specialise) the graphs.
OPTIMIZE = False

_SCRIPTED: dict[str, Any] = {}
_LOCK = threading.Lock()


def scripted(fn: Callable[..., Any]) -> Any:
    """``torch.jit.script(fn)``, compiled once per process."""
    key = f"{fn.__module__}.{fn.__qualname__}"
    graph = _SCRIPTED.get(key)
    if graph is None:
        with _LOCK:
            graph = _SCRIPTED.get(key)
            if graph is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.jit.script's DeprecationWarning (torch 2.9+)
                    graph = torch.jit.script(fn)
                _SCRIPTED[key] = graph
    return graph


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """``scripted(fn)(*args)`` with the executor's optimisations per :data:`OPTIMIZE`, no autograd."""
    graph = scripted(fn)
    with torch.no_grad(), torch.jit.optimized_execution(OPTIMIZE):
        return graph(*args)
