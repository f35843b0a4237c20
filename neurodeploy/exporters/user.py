"""Loading the user's network for ``export --module FILE.py:NAME [--weights W.pt]``.

The file is the user's own code and runs as such (it is imported); the weights are data
and are read with ``torch.load(weights_only=True)``: tensors only, no code. Every
failure is one line naming the file, the name or the mismatching tensors.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from ..errors import NeurodeployError


def parse_shape(text: str) -> tuple:
    """"1,28,28" -> (1, 28, 28); every size a positive integer."""
    try:
        shape = tuple(int(p) for p in str(text).replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise NeurodeployError(f"--input-shape {text!r}: give positive integers separated by commas, "
                               "e.g. 1,28,28") from None
    if not shape or any(d <= 0 for d in shape):
        raise NeurodeployError(f"--input-shape {text!r}: give positive integers separated by commas, e.g. 1,28,28")
    return shape


def _import_file(path: Path):
    name = f"neurodeploy_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise NeurodeployError(f"{path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    sys.path.insert(0, str(path.resolve().parent))      # its own sibling imports
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(name, None)
        raise NeurodeployError(f"{path} does not import: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return mod


def load_state(path: Path) -> dict:
    """A state_dict (or a checkpoint dict holding one under 'state_dict' / 'model'), tensors only."""
    if not Path(path).exists():
        raise NeurodeployError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on foreign files
        raise NeurodeployError(f"{path}: not a state_dict saved with torch.save ({type(e).__name__}); "
                               "only tensors are read (weights_only)") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise NeurodeployError(f"{path}: not a state_dict (a dict of tensors)")
    return state


def load_module(spec: str, weights: Optional[Path] = None) -> Tuple[nn.Module, str]:
    """``FILE.py:NAME`` -> (module, NAME); NAME is an nn.Module class with a no-argument
    constructor, a function returning a module, or a module instance."""
    if ":" not in spec:
        raise NeurodeployError(f"--module {spec!r}: give FILE.py:NAME, e.g. mynet.py:Net")
    file, name = spec.rsplit(":", 1)
    path = Path(file)
    if not path.exists():
        raise NeurodeployError(f"{path}: no such file")
    mod = _import_file(path)
    if not hasattr(mod, name):
        found = sorted(k for k, v in vars(mod).items()
                       if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == mod.__name__)
        raise NeurodeployError(f"{path} has no {name!r}" + (f"; its modules: {', '.join(found)}" if found else ""))
    obj = getattr(mod, name)
    try:
        net = obj if isinstance(obj, nn.Module) else obj()
    except Exception as e:  # noqa: BLE001
        raise NeurodeployError(f"{spec}: calling {name}() failed ({type(e).__name__}: {e}); NAME must build "
                               "the network without arguments") from None
    if not isinstance(net, nn.Module):
        raise NeurodeployError(f"{spec}: {name}() returned a {type(net).__name__}, not an nn.Module")
    if weights is not None:
        state = load_state(weights)
        own = net.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                 if k in own and tuple(own[k].shape) != tuple(v.shape)]
        if missing or unexpected or wrong:
            parts = [f"{what} {', '.join(keys[:4])}" + (" ..." if len(keys) > 4 else "")
                     for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys]
            raise NeurodeployError(f"{weights} does not fit {name}: " + "; ".join(parts))
        net.load_state_dict(state)
    return net, name
