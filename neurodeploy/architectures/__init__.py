"""The model zoo's architectures: one family per module, each building a CNN and a spiking twin.

``build(name, twin="snn", **arguments)`` is the one entry point; ``ARCHITECTURES``
lists the names. Architectures never import a backend.
"""
from __future__ import annotations

from ..errors import NeurodeployError
from .layers import Twin, TwinModel, count_macs, count_parameters
from .mixnet import mixnet
from .mnasnet import mnasnet
from .shufflenetv2 import shufflenetv2
from .squeezenet import pruned_squeezenet, squeezenet
from .xception import xception

ARCHITECTURES = {
    "squeezenet": ("squeezenet", squeezenet),
    "pruned_squeezenet": ("squeezenet", pruned_squeezenet),
    "shufflenetv2": ("shufflenetv2", shufflenetv2),
    "mnasnet": ("mnasnet", mnasnet),
    "mixnet": ("mixnet", mixnet),
    "xception": ("xception", xception),
}


def family_of(name: str) -> str:
    return ARCHITECTURES[check_name(name)][0]


def check_name(name: str) -> str:
    if name not in ARCHITECTURES:
        raise NeurodeployError(f"unknown model {name!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return name


def build(name: str, twin: str | Twin = "snn", **arguments) -> TwinModel:
    """Build a zoo architecture. ``arguments``: num_classes, input_size, in_channels,
    timesteps and the family's own (e.g. ``fires`` for squeezenet)."""
    fn = ARCHITECTURES[check_name(name)][1]
    if isinstance(twin, str):
        if twin not in ("snn", "cnn"):
            raise NeurodeployError(f"unknown twin {twin!r}; choose snn or cnn")
        twin = Twin(twin)
    model = fn(twin, **arguments)
    model.name = name
    return model


__all__ = ["ARCHITECTURES", "build", "family_of", "check_name", "Twin", "TwinModel",
           "count_macs", "count_parameters"]
