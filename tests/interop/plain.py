"""A plain step-by-step executor of NIR's semantics, written for the tests independently of
the backends: NumPy, float64, one timestep at a time, each node's equation as NIR states it
(forward Euler at step dt):

    IF       v += r I                       (once per step: the ecosystem's convention)
    LIF      v += dt/tau (v_leak - v + r I)
    LI       the same, the membrane is the output
    CubaLIF  i += dt/tau_syn (-i + w_in I);  v += dt/tau_mem (v_leak - v + r i)
    spikes   s = v > v_threshold;  v = v_reset where s

An edge that closes a cycle (found depth-first from the Input) carries its source's value
of the previous step (zero at the first): NIR's recurrence with a one-step delay.
"""
from __future__ import annotations

import numpy as np
import torch


def _arr(v):
    return np.asarray(v.detach().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)


def _order(graph):
    """Depth-first from the Input: reverse postorder, and the edges that close a cycle."""
    succ = {n: [d for s, d in graph.edges if s == n] for n in graph.nodes}
    seen, done, order, back = set(), set(), [], set()

    def visit(n):
        seen.add(n)
        for m in succ[n]:
            if m in seen and m not in done:
                back.add((n, m))
            elif m not in seen:
                visit(m)
        done.add(n)
        order.append(n)

    for n in [k for k, v in graph.nodes.items() if type(v).__name__ == "Input"] + list(graph.nodes):
        if n not in seen:
            visit(n)
    return order[::-1], back


def run(graph, x, steps: int, dt: float = 1e-4, sequence: bool = False) -> np.ndarray:
    """x: (N, ...) static, or (T, N, ...) with ``sequence``; returns the Output's values (T, N, ...)."""
    x = np.asarray(x, dtype=np.float64)
    order, back = _order(graph)
    pred = {n: [s for s, d in graph.edges if d == n] for n in graph.nodes}
    state, prev, outs = {}, {}, []
    for t in range(steps):
        val = {}
        for n in order:
            node = graph.nodes[n]
            kind = type(node).__name__
            if kind == "Input":
                val[n] = x[t] if sequence else x
                continue
            ins = [prev.get(p) if (p, n) in back else val[p] for p in pred[n]]
            ins = [v for v in ins if v is not None]
            inp = sum(ins[1:], ins[0])
            if kind == "Output":
                val[n] = inp
            elif kind == "Affine":
                val[n] = inp @ _arr(node.weight).T + _arr(node.bias)
            elif kind == "Linear":
                val[n] = inp @ _arr(node.weight).T
            elif kind == "Conv2d":
                val[n] = torch.nn.functional.conv2d(
                    torch.as_tensor(inp), torch.as_tensor(_arr(node.weight)), torch.as_tensor(_arr(node.bias)),
                    stride=tuple(np.atleast_1d(node.stride)), padding=tuple(np.atleast_1d(node.padding))).numpy()
            elif kind == "SumPool2d":
                k = tuple(np.atleast_1d(node.kernel_size))
                n_, c, h, w = inp.shape
                val[n] = inp.reshape(n_, c, h // k[0], k[0], w // k[1], k[1]).sum(axis=(3, 5))
            elif kind == "Flatten":
                val[n] = inp.reshape(inp.shape[0], -1)
            elif kind == "IF":
                v = state.get(n, np.zeros_like(inp)) + _arr(node.r) * inp
                val[n], state[n] = _fire(node, v)
            elif kind in ("LIF", "LI"):
                v = state.get(n, np.zeros_like(inp))
                v = v + dt / _arr(node.tau) * (_arr(node.v_leak) - v + _arr(node.r) * inp)
                if kind == "LI":
                    val[n] = state[n] = v
                else:
                    val[n], state[n] = _fire(node, v)
            elif kind == "CubaLIF":
                i, v = state.get(n, (np.zeros_like(inp), np.zeros_like(inp)))
                i = i + dt / _arr(node.tau_syn) * (-i + _arr(node.w_in) * inp)
                v = v + dt / _arr(node.tau_mem) * (_arr(node.v_leak) - v + _arr(node.r) * i)
                val[n], v = _fire(node, v)
                state[n] = (i, v)
            else:
                raise AssertionError(f"the plain executor does not know {kind}")
        prev = val
        outs.append(val[[k for k, v in graph.nodes.items() if type(v).__name__ == "Output"][0]])
    return np.stack(outs)


def _fire(node, v):
    s = (v > _arr(node.v_threshold)).astype(np.float64)
    return s, np.where(s > 0, _arr(node.v_reset), v)

