"""The served policy as one immutable bundle behind one reference, swapped atomically.

A request reads :attr:`ModelHolder.bundle` once and uses that bundle to the end, so an
in-flight request finishes on the models it started with even while the watcher swaps in a
new one (assigning a Python reference is atomic; writers are serialised by a lock so two swaps
never lose each other's component). Every load/refuse/gate decision is recorded with its
reason and shown by ``GET /models``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from serving.components import ROLES, Component


@dataclass(frozen=True)
class Bundle:
    """What one request runs on: a component (or ``None`` = cold start) per role."""

    calibrator: Component | None = None
    fusion: Component | None = None
    reranker: Component | None = None
    generation: int = 0

    def component(self, role: str) -> Component | None:
        return getattr(self, role)

    def versions(self) -> dict[str, str]:
        out = {}
        for role in ROLES:
            comp = self.component(role)
            out[role] = f"{comp.name}:{comp.version}" if comp else "cold-start"
        return out

    def model_versions(self) -> dict[str, str]:
        """``model name -> version`` of the loaded components (what impressions log)."""
        return {c.name: c.version for c in (self.calibrator, self.fusion, self.reranker) if c is not None}


@dataclass(frozen=True)
class Decision:
    """One watcher decision about a snapshot version."""

    at: float
    model: str
    version: str
    role: str
    action: str  # "swapped" | "refused" | "blocked-by-gate"
    reason: str
    source: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "model": self.model, "version": self.version, "role": self.role,
                "action": self.action, "reason": self.reason, "source": self.source, "details": self.details}


class ModelHolder:
    """Holds the current :class:`Bundle`; ``swap`` replaces one role's component."""

    def __init__(self, bundle: Bundle | None = None, history: int = 1000) -> None:
        self._bundle = bundle or Bundle()
        self._write_lock = threading.Lock()
        self.decisions: deque[Decision] = deque(maxlen=history)
        self.swaps = 0
        self.refusals = 0

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    def swap(self, component: Component) -> Bundle:
        with self._write_lock:
            new = replace(self._bundle, **{component.role: component}, generation=self._bundle.generation + 1)
            self._bundle = new
            self.swaps += 1
            return new

    def record(self, decision: Decision) -> None:
        with self._write_lock:
            self.decisions.append(decision)
            if decision.action != "swapped":
                self.refusals += 1

    def recent_decisions(self, n: int = 50) -> list[dict[str, Any]]:
        return [d.as_dict() for d in list(self.decisions)[-n:]]


def now() -> float:
    return time.time()
