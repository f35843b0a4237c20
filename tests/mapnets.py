"""Small NIR graphs and a configurable test chip for the hardware-mapping tests
(tests/measure/test_mapping.py, tests/test_cli_map.py)."""
from __future__ import annotations

import nir
import numpy as np


def lif(shape):
    return nir.LIF(tau=np.full(shape, 0.01), r=np.ones(shape), v_leak=np.zeros(shape), v_threshold=np.ones(shape))


def conv(w, in_hw, stride=1, padding=0, groups=1):
    w = np.asarray(w, np.float32)
    return nir.Conv2d(input_shape=tuple(in_hw), weight=w, stride=(stride, stride), padding=(padding, padding),
                      dilation=(1, 1), groups=groups, bias=np.zeros(w.shape[0], np.float32))


def pool(k):
    return nir.AvgPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))


def graph(nodes, edges):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def dense_chain(n_in=8, n1=16, n2=4, seed=0):
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(n1, n_in)), rng.normal(size=(n2, n1))
    w2[0, :3] = 0.0
    nodes = {"input": nir.Input(np.array([n_in])), "fc1": nir.Affine(w1, np.zeros(n1)), "lif1": lif(n1),
             "fc2": nir.Affine(w2, np.zeros(n2)), "lif2": lif(n2), "output": nir.Output(np.array([n2]))}
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return graph(nodes, edges), w1, w2


def conv_net(seed=0):
    """input -> c1 -> lif1 (4x8x8) -> c2 (grouped, stride 2) -> lif2 (6x4x4);
    lif1 -> pool 2 -> c3 (1x1) -> lif3 (5x4x4) <- c4 (3x3) <- lif2;  lif3 -> global pool -> flatten -> fc -> lif4."""
    rng = np.random.default_rng(seed)

    def w(*shape, zeros=0.3):
        a = rng.normal(size=shape)
        a[rng.random(shape) < zeros] = 0.0
        return a

    W = {"c1": w(4, 1, 3, 3), "c2": w(6, 2, 3, 3), "c3": w(5, 4, 1, 1), "c4": w(5, 6, 3, 3), "fc": w(3, 5, zeros=0.2)}
    nodes = {"input": nir.Input(np.array([1, 8, 8])),
             "c1": conv(W["c1"], (8, 8), padding=1), "lif1": lif((4, 8, 8)),
             "c2": conv(W["c2"], (8, 8), stride=2, padding=1, groups=2), "lif2": lif((6, 4, 4)),
             "p": pool(2), "c3": conv(W["c3"], (4, 4)),
             "c4": conv(W["c4"], (4, 4), padding=1), "lif3": lif((5, 4, 4)),
             "gp": pool(4), "flat": nir.Flatten(input_type={"input": np.array([5, 1, 1])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(W["fc"], np.zeros(3)), "lif4": lif(3), "output": nir.Output(np.array([3]))}
    edges = [("input", "c1"), ("c1", "lif1"), ("lif1", "c2"), ("c2", "lif2"), ("lif1", "p"), ("p", "c3"),
             ("c3", "lif3"), ("lif2", "c4"), ("c4", "lif3"), ("lif3", "gp"), ("gp", "flat"), ("flat", "fc"),
             ("fc", "lif4"), ("lif4", "output")]
    return graph(nodes, edges), W


def chip(tmp_path, name="tiny", **mapping):
    """A target file with the given [mapping] values (and an event-model [timing], 1 mW per core)."""
    m = {"neurons_per_core": 5, "cores_per_chip": 64, "encodings": "sparse", "weight_bits": 8,
         "sparse_index_bits": 8, **mapping}

    def val(v):
        return f'"{v}"' if isinstance(v, str) else ("true" if v is True else repr(v))
    lines = [f'name = "{name}"', 'description = "a test chip"', 'backend = "torch"', 'kind = "analytic"',
             'rule = "synop"', "[energy]", 'synop = { value = 1.0, unit = "pJ", source = "test" }',
             'host_mac = { value = 1.0, unit = "pJ", source = "test" }', "[mapping]"]
    lines += [f'{k} = {{ value = {val(v)}, unit = "", source = "test" }}' for k, v in m.items()]
    lines += ["[timing]", 'model = { value = "event", unit = "", source = "test" }']
    for k, v in {"synop": 2.0, "neuron_update_active": 10.0, "neuron_update_inactive": 5.0, "spike": 3.0,
                 "barrier": 100.0}.items():
        lines.append(f'{k} = {{ value = {v}, unit = "ns", source = "test" }}')
    lines += ["[static]", 'power = { value = 1.0, unit = "mW", source = "test" }',
              'scope = { value = "core", unit = "", source = "test" }']
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


