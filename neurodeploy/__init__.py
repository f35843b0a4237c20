"""neurodeploy: spiking CNNs -> NIR -> Lava/Loihi and a PyTorch reference backend, with measured energy.

The stable Python surface (docs/api.md) is importable from here; each name loads its
module on first use, so ``import neurodeploy`` stays light (the Lava runtime imports
the package too) and changes nothing in the caller's process.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> (module, attribute): the documented API
_API = {
    "read": ("neurodeploy.ir.io", "read_graph"),
    "save": ("neurodeploy.ir.io", "write_graph"),
    "conventions_of": ("neurodeploy.ir.conventions", "conventions_of"),
    "export": ("neurodeploy.exporters", "export"),
    "verify": ("neurodeploy.measure.exactness", "verify"),
    "compile": ("neurodeploy.backends", "compile"),
    "compare": ("neurodeploy.measure.compare", "compare"),
    "price": ("neurodeploy.measure.energy", "price"),
    "load_target": ("neurodeploy.measure.energy", "load_target"),
    "NeurodeployError": ("neurodeploy.errors", "NeurodeployError"),
}


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neurodeploy' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


__all__ = ["__version__", *_API]
