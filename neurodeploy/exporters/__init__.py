"""From a trained torch network to the files other tools read.

* :mod:`.lowering` -- the exact lowering to NIR (BatchNorm, concatenations, shuffles,
  residuals), shared by the zoo's twins and ordinary modules;
* :mod:`.module` -- the user's own network (snnTorch and ordinary layers): trace, fold,
  lower, and verify spike for spike;
* :mod:`.neurons` -- neuron modules (this toolkit's LIF, snnTorch's) as NIR populations;
* :mod:`.onnx` -- one timestep with explicit membrane state, for onnxruntime.

(Lava-DL's netx files are written by the Lava compiler, ``backends/lava/netx.py``.)
"""
from __future__ import annotations


def export(module, example_input, timesteps=None, dt=None, snap: bool = False):
    """Any spiking network -> an exact ``nir.NIRGraph`` (``neurodeploy.export``).

    ``example_input``: a batch (N, *input_shape) or the per-sample shape. A zoo twin
    (``TwinModel``) goes through the zoo's lowering; anything else through
    :func:`neurodeploy.exporters.module.export`. The module is not changed.
    """
    from ..architectures.layers import TwinModel
    if isinstance(module, TwinModel):
        from .lowering import export as export_twin
        from .module import _example
        shape = tuple(_example(example_input).shape[1:])
        if timesteps is not None:
            import copy
            module = copy.deepcopy(module)
            module.timesteps = int(timesteps)
        return export_twin(module, shape)
    from .module import export as export_module
    return export_module(module, example_input, timesteps=timesteps, dt=dt, snap=snap)
