"""Hardware targets: one TOML file per chip or process (``cmos45nm``, ``loihi``, ...), every
constant with its source. Data shipped inside the package; :mod:`neurodeploy.measure.energy`
parses and prices them. This module only says which exist, so that any layer can tell a
hardware target's name from a backend's without loading the energy model."""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def names() -> list:
    return sorted(p.stem for p in FOLDER.glob("*.toml"))
