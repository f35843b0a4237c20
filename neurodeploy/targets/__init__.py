"""Hardware targets: one TOML file per chip or process (``cmos45nm``, ``loihi1``, ...), every
constant with its source. Data shipped inside the package; :mod:`neurodeploy.measure.energy`
parses and prices them. This module only says which exist, so that any layer can tell a
hardware target's name from a backend's without loading the energy model."""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


#: older names still accepted: ``loihi`` was Loihi 1's file before Loihi 2 had its own
ALIASES = {"loihi": "loihi1"}


def names() -> list:
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def resolve(name: str) -> str:
    """The target file's name for a name or an alias (``loihi`` -> ``loihi1``)."""
    return ALIASES.get(name, name)
