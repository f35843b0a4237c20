"""``neurodeploy map``: a graph placed on a chip's cores (measure/mapping.py), its time per step and
per inference, and (given counters) its energy; optionally a PNG of the placement.

Without counters, time is an upper bound (every neuron spikes and every synapse is active every
step); with counters from ``neurodeploy run --save-counts`` it follows the measured activity and
the energy (dynamic per event, static x latency, EDP) is reported too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import NeurodeployError
from ..ir.conventions import conventions_of
from ..ir.counters import RunCounters
from ..ir.io import file_sha256, read_graph
from ..measure import energy as en
from ..measure import mapping as mp


def load_counts(counts_file, sha: str) -> RunCounters:
    try:
        counters = RunCounters.from_dict(json.loads(Path(counts_file).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NeurodeployError(f"{counts_file}: not a counters JSON written by `neurodeploy run "
                               f"--save-counts` ({type(e).__name__}: {e})") from e
    en.check_graph(counters, sha)
    return counters


def map_report(file, target: str, counts_file=None, timesteps: Optional[int] = None, plot=None,
               cores: bool = False) -> dict:
    """The `map` command's report (one JSON object); writes the PNG when `plot` is given."""
    file = Path(file)
    graph = read_graph(file)
    sha = file_sha256(file)
    mapping = mp.map_graph(graph, target)
    counters = load_counts(counts_file, sha) if counts_file else None
    steps = timesteps or (counters.timesteps if counters is not None else None) or \
        conventions_of(graph).timesteps or 1
    lat = mp.latency(mapping, steps, counters)
    energy = None
    if counters is not None and mapping.spec.target.rule != "none":
        dynamic = en.price(counters, mapping.spec.target, graph_sha256=sha).joules
        energy = mp.cost_of(mapping, lat, dynamic)
    report = {"file": str(file), "graph_sha256": sha, **mapping.to_dict(cores=cores), "latency": lat.to_dict(),
              "counts": str(counts_file) if counts_file else None, "energy": energy}
    if plot:
        report["plot"] = str(plot_mapping(mapping, plot))
    return report


# ---------------------------------------------------------------------------- the picture

def _layout(cores_per_chip: int) -> tuple:
    """(columns, rows) of one chip's core grid."""
    side = np.sqrt(cores_per_chip)
    power_of_two = cores_per_chip & (cores_per_chip - 1) == 0
    cols = int(2 ** np.ceil(np.log2(side))) if power_of_two else int(np.ceil(side))   # Loihi: 16 x 8
    return cols, int(np.ceil(cores_per_chip / cols))


def plot_mapping(mapping: mp.Mapping, path) -> Path:
    """Two panels over the chips' core grids: which population each core holds (shared cores dotted)
    and how full it is (the most used of its limited resources)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from ..fsutil import atomic_output

    path = Path(path)
    per_chip = mapping.cores_per_chip
    chips = max(mapping.chips, 1)
    cols, rows_chip = _layout(per_chip)
    grid_pop = np.full((rows_chip * chips, cols), np.nan)
    grid_use = np.full((rows_chip * chips, cols), np.nan)
    unused = np.zeros((rows_chip * chips, cols), dtype=bool)
    for k in range(chips * per_chip):
        chip, i = divmod(k, per_chip)
        unused[chip * rows_chip + i // cols, i % cols] = True
    names = [p.name for p in mapping.populations]
    index = {n: i for i, n in enumerate(names)}
    shared = []
    for c in mapping.cores:
        chip, i = divmod(c.index, per_chip)
        r, q = chip * rows_chip + i // cols, i % cols
        unused[r, q] = False
        by_pop = {}
        for t in c.tiles:
            by_pop[t.population] = by_pop.get(t.population, 0) + t.neurons
        grid_pop[r, q] = index[max(by_pop, key=by_pop.get)]
        util = c.utilisation()
        grid_use[r, q] = max(util.values()) if util else 0.0
        if len(by_pop) > 1:
            shared.append((q, r))
    tab = plt.get_cmap("tab20")
    cmap = ListedColormap([tab(i % 20) for i in range(max(len(names), 1))])
    height = max(3.0, min(14.0, 0.22 * rows_chip * chips + 2))
    fig, axes = plt.subplots(1, 2, figsize=(13, height), constrained_layout=True)
    for ax, data, title in ((axes[0], grid_pop, "population on each core"),
                            (axes[1], grid_use, "utilisation (most used resource)")):
        ax.imshow(np.where(unused, 1.0, np.nan), cmap=ListedColormap(["#dddddd"]), vmin=0, vmax=1,
                  interpolation="nearest", aspect="auto")
        if data is grid_pop:
            ax.imshow(data, cmap=cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest", aspect="auto")
            if shared and len(shared) < 2000:
                xs, ys = zip(*shared)
                ax.scatter(xs, ys, s=6, c="black", marker=".", label="shared by several populations")
        else:
            im = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
            fig.colorbar(im, ax=ax, shrink=0.8, label="used / available")
        for chip in range(1, chips):
            ax.axhline(chip * rows_chip - 0.5, color="black", lw=1.2)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([(c + 0.5) * rows_chip - 0.5 for c in range(chips)] if chips <= 40 else [])
        ax.set_yticklabels([f"chip {c}" for c in range(chips)] if chips <= 40 else [])
    handles = [plt.Rectangle((0, 0), 1, 1, color=tab(i % 20)) for i in range(len(names))]
    shown = 24
    labels = [f"{i}: {n} (" + ("REFUSED" if p.unplaceable else f"{len(p.cores)} cores") + ")"
              for i, (n, p) in enumerate(zip(names, mapping.populations))]
    axes[0].legend(handles[:shown], labels[:shown], fontsize=6,
                   loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
                   title=None if len(names) <= shown else f"first {shown} of {len(names)}")
    fig.suptitle(f"{mapping.target}: {mapping.verdict}"[:160], fontsize=9)
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
