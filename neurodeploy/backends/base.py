"""The one interface every backend implements.

A backend module exposes

    compile(graph: nir.NIRGraph, *, source: Path | None = None, **options) -> Program
    supports(graph: nir.NIRGraph) -> Support

and a ``Program`` runs inputs: ``run(inputs, timesteps=None, batch_size=64,
progress=None) -> RunResult`` with the outputs (T, N, *output) and the counters of
:mod:`neurodeploy.ir.counters`. ``source`` is the .nir file the graph was read from,
for backends that need more than the graph (the ``model`` backend finds the
checkpoint beside it). ``supports`` is what ``check`` prints and what ``compile``
enforces, so the two never disagree.

:mod:`neurodeploy.backends` keeps the registry of names; commands ask it, never a
backend module directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from ..ir.counters import RunResult


@dataclass(frozen=True)
class Support:
    """Whether a backend can run a graph, and why (one line either way)."""
    ok: bool
    why: str


@runtime_checkable
class Program(Protocol):
    """A graph compiled for one backend."""

    def run(self, inputs: np.ndarray, timesteps: Optional[int] = None, batch_size: int = 64,
            progress=None) -> RunResult: ...


__all__ = ["Program", "Support", "RunResult"]
