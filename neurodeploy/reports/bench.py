"""``neurodeploy bench``: the paper's Tables 1 and 2, re-measured on this toolkit.

For every zoo model: accuracy and macro-F1 of both twins (from their cards, measured
on the test split when they were trained), and, measured now on ``samples`` test
inputs with the torch reference backend, the spiking twin's effective ACs and MACs per
inference, priced with the paper's 45 nm model (AC 0.9 pJ, MAC 4.6 pJ), and the CNN
twin's MACs x 4.6 pJ; the CNN/SNN ratio as Table 2. The paper's published CIFAR-10
figures stand in adjacent columns, labelled ``paper_*``: they are the paper's, on
another dataset, not ours.

Outputs (in ``-o DIR``): bench.md, bench.csv, bench.json and accuracy_energy.png
(accuracy against energy per inference, one point per model and twin, the Pareto
front of lowest energy for the accuracy marked). Each model's row is cached in
DIR/rows/NAME.json, so an interrupted bench resumes where it stopped.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..measure import energy as en
from ..measure import paper as paper_mod
from ..training import zoo
from ..errors import NeurodeployError

COLUMNS = ["model", "snn_acc", "snn_f1", "cnn_acc", "cnn_f1", "ac_m", "mac_m", "params_k", "snn_energy_mj",
           "cnn_macs_m", "cnn_energy_mj", "cnn_over_snn", "paper_snn_acc", "paper_ac_m", "paper_mac_m",
           "paper_params_k", "paper_snn_energy_mj", "paper_cnn_energy_mj", "paper_ratio"]


def _paper_rows() -> dict:
    t1 = {r["model"]: r for r in paper_mod.paper_tables(1) if r["dataset"] == "cifar10"}
    t2 = {r["model"]: r for r in paper_mod.paper_tables(2) if r["dataset"] == "cifar10"}
    return {m: (t1.get(m, {}), t2.get(m, {})) for m in set(t1) | set(t2)}


def measure_model(name: str, dataset: str, samples: int, out_dir: Path, device="auto") -> dict:
    from .. import backends
    from ..training.data import load_tensors
    from ..exporters.lowering import export_checkpoint_model
    from ..ir.io import write_graph
    from ..training import checkpoint
    snn_path = zoo.checkpoint_path(name, "snn")
    if not snn_path.exists():
        raise NeurodeployError(zoo.missing_checkpoint(name))
    snn_card, cnn_card = zoo.read_card(name, "snn") or {}, zoo.read_card(name, "cnn") or {}
    model = checkpoint.load(snn_path)
    graph = export_checkpoint_model(model, snn_path)
    write_graph(out_dir / "graphs" / f"{name}.nir", graph)
    shape = model.card["input_shape"]
    x, _ = load_tensors(dataset, "test", shape[-1], limit=samples)
    counters = backends.compile("torch", graph, device=device).run(x.numpy()).counters
    snn = en.price(counters, "cmos45nm")
    cnn_macs = float(snn_card.get("cnn_macs") or en.cnn_twin_macs(counters))
    cnn_j = en.cnn_energy(cnn_macs)
    tot = counters.totals()
    p1, p2 = _paper_rows().get(name, ({}, {}))
    return {"model": name, "snn_acc": snn_card.get("test_accuracy"), "snn_f1": snn_card.get("test_macro_f1"),
            "cnn_acc": cnn_card.get("test_accuracy"), "cnn_f1": cnn_card.get("test_macro_f1"),
            "ac_m": tot["effective_acs"] / 1e6, "mac_m": tot["effective_macs"] / 1e6,
            "params_k": snn_card.get("parameters", 0) / 1e3, "snn_energy_mj": snn.joules * 1e3,
            "cnn_macs_m": cnn_macs / 1e6, "cnn_energy_mj": cnn_j * 1e3,
            "cnn_over_snn": en.energy_ratio(cnn_j, snn.joules),
            "paper_snn_acc": p1.get("acc"), "paper_ac_m": (p1.get("ac_k") or 0) / 1e3 or None,
            "paper_mac_m": (p1.get("mac_k") or 0) / 1e3 or None, "paper_params_k": p1.get("params_k"),
            "paper_snn_energy_mj": p1.get("energy_mj"), "paper_cnn_energy_mj": p2.get("cnn_energy_mj"),
            "paper_ratio": p2.get("ratio"), "samples": int(counters.samples), "timesteps": counters.timesteps,
            "dataset": dataset}


def pareto_front(points):
    """Indices of points not dominated (lower energy and higher accuracy is better)."""
    front = []
    for i, (e, a) in enumerate(points):
        if not any((e2 <= e and a2 >= a) and (e2 < e or a2 > a) for j, (e2, a2) in enumerate(points) if j != i):
            front.append(i)
    return front


MARKERS = [("o", "tab:blue"), ("s", "tab:orange"), ("^", "tab:green"), ("D", "tab:red"), ("v", "tab:purple"),
           ("P", "tab:brown"), ("X", "tab:pink"), ("*", "tab:gray")]


def bench_points(rows) -> list:
    """(energy mJ, accuracy, label, group) per model and twin: bench's plot."""
    pts = []
    for r in rows:
        if r["snn_acc"] is not None:
            pts.append((r["snn_energy_mj"], r["snn_acc"], f"{r['model']} SNN", "SNN"))
        if r["cnn_acc"] is not None:
            pts.append((r["cnn_energy_mj"], r["cnn_acc"], f"{r['model']} CNN", "CNN"))
    return pts


def plot(rows, path: Path, points=None, xlabel="energy per inference (mJ, 45 nm model)",
         title="accuracy vs energy: spiking (o) and CNN (s) twins"):
    """Accuracy against energy per inference, one marker per group (bench: SNN / CNN twin;
    sweep: hardware target), the Pareto front of lowest energy for the accuracy outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = bench_points(rows) if points is None else points
    pts = [(e, a) for e, a, _, _ in points]
    groups = list(dict.fromkeys(g for *_, g in points))
    style = {g: MARKERS[i % len(MARKERS)] for i, g in enumerate(groups)}
    front = set(pareto_front(pts))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (e, a, label, group) in enumerate(points):
        marker, colour = style[group]
        ax.scatter(e, a, marker=marker, c=colour, edgecolors="black" if i in front else "none", linewidths=1.5,
                   s=60, label=group if all(p[3] != group for p in points[:i]) else None)
        ax.annotate(label, (e, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    fp = sorted(pts[i] for i in front)
    if fp:
        ax.plot([p[0] for p in fp], [p[1] for p in fp], "k--", lw=0.8, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v):
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(headers, rows) -> list:
    """A Markdown table: one line per row, cells formatted by :func:`_fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return lines


def markdown(rows, dataset, samples) -> str:
    headers = ["model", "SNN acc", "SNN F1", "CNN acc", "ACs (M)", "MACs (M)", "params (k)", "SNN mJ", "CNN mJ",
               "CNN/SNN", "paper SNN acc", "paper ACs (M)", "paper MACs (M)", "paper params (k)", "paper SNN mJ",
               "paper CNN mJ", "paper ratio"]
    lines = [f"# Tables 1 and 2 re-measured ({dataset}, counts on {samples} test samples)", "",
             "Columns `paper ...` are the paper's published CIFAR-10 figures (arXiv 2602.09717), "
             "not measurements of this toolkit. Energy: 45 nm model, AC 0.9 pJ, MAC 4.6 pJ.", ""]
    lines += markdown_table(headers, [[r["model"], r["snn_acc"], r["snn_f1"], r["cnn_acc"], r["ac_m"], r["mac_m"],
                                       r["params_k"], r["snn_energy_mj"], r["cnn_energy_mj"], r["cnn_over_snn"],
                                       r["paper_snn_acc"], r["paper_ac_m"], r["paper_mac_m"], r["paper_params_k"],
                                       r["paper_snn_energy_mj"], r["paper_cnn_energy_mj"], r["paper_ratio"]]
                                      for r in rows])
    return "\n".join(lines) + "\n"


def _checkpoint_hashes(name: str) -> dict:
    """What a cached row was measured from: re-measure when a twin is re-trained."""
    from ..training.checkpoint import sha256
    return {t: sha256(p) if (p := zoo.checkpoint_path(name, t)).exists() else None for t in ("snn", "cnn")}


def _check(models, dataset, samples, out_dir, device) -> list:
    """Everything a bench needs, checked before anything is created: the names, the
    dataset, the numbers, the output folder, the checkpoints of models named explicitly."""
    from ..architectures import check_name
    from ..training.data import get_info
    from ..validation import DEVICES, at_least, choice, output_folder
    at_least("--samples", samples, 1)
    choice("--device", device, DEVICES)
    get_info(dataset)
    output_folder("--output", out_dir)
    if models:
        for name in models:
            check_name(name)
            if name not in zoo.RECIPES:
                raise NeurodeployError(f"{name} is not a zoo model with a recipe; choose from {', '.join(zoo.RECIPES)}")
            if not zoo.checkpoint_path(name, "snn").exists():
                raise NeurodeployError(zoo.missing_checkpoint(name))
        return list(models)
    # By default every zoo model that has a trained spiking checkpoint
    return [n for n in zoo.RECIPES if zoo.checkpoint_path(n, "snn").exists()]


def run_bench(models, dataset, samples, out_dir, device="auto", progress=None) -> dict:
    """Measure, then write the folder. Every file is written atomically; each model's row
    is cached (an interrupted bench resumes there); a bench that fails before its first row
    leaves no folder behind (unless the folder was there before)."""
    out_dir = Path(out_dir)
    names = _check(models, dataset, samples, out_dir, device)
    skipped = [] if models else [n for n in zoo.RECIPES if n not in names]
    created = [d for d in (out_dir, out_dir / "rows", out_dir / "graphs") if not d.exists()]
    try:
        return _run_bench(names, skipped, dataset, samples, out_dir, device, progress)
    except BaseException:
        _remove_if_empty(created)
        raise


def _remove_if_empty(created: list) -> None:
    """Remove the folders this run created if they hold no file (deepest first)."""
    for d in sorted(created, key=lambda p: len(p.parts), reverse=True):
        try:
            if d.is_dir() and not any(p.is_file() for p in d.rglob("*")):
                for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    sub.rmdir()
                d.rmdir()
        except OSError:
            pass


def _run_bench(names, skipped, dataset, samples, out_dir: Path, device, progress) -> dict:
    from ..fsutil import write_text
    task = progress.add_task("bench", total=len(names), status="") if progress else None
    rows = []
    for name in names:
        cache = out_dir / "rows" / f"{name}.json"
        try:
            row = json.loads(cache.read_text()) if cache.exists() else None
        except (OSError, ValueError):
            row = None       # a cache that cannot be read is measured again
        if not isinstance(row, dict) or row.get("samples") != samples or row.get("dataset") != dataset \
                or row.get("checkpoints") != _checkpoint_hashes(name):
            if progress:
                progress.update(task, status=name)
            row = measure_model(name, dataset, samples, out_dir, device)
            row["checkpoints"] = _checkpoint_hashes(name)
            write_text(cache, json.dumps(row, indent=2))
        rows.append(row)
        if progress:
            progress.update(task, advance=1)
    files = write_report(out_dir, "bench", {"dataset": dataset, "samples": samples}, rows, COLUMNS,
                         markdown(rows, dataset, samples))
    return {"dataset": dataset, "samples": samples, "rows": rows, "skipped_untrained": skipped, "files": files}


def write_report(out_dir: Path, stem: str, meta: dict, rows: list, columns: list, text: str,
                 points=None, **plot_labels) -> dict:
    """The four files of a report, each written atomically: STEM.json (``meta`` and the rows),
    STEM.csv (``columns``), STEM.md (``text``) and accuracy_energy.png (``points``, default
    bench's). ``bench`` and ``sweep`` both write through here."""
    from ..fsutil import atomic_output, write_text
    out_dir = Path(out_dir)
    write_text(out_dir / f"{stem}.json", json.dumps({**meta, "rows": rows}, indent=2))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_text(out_dir / f"{stem}.csv", buf.getvalue())
    write_text(out_dir / f"{stem}.md", text)
    with atomic_output(out_dir / "accuracy_energy.png", suffix=".png") as tmp:
        plot(rows, tmp, points, **plot_labels)
    return {k: str(out_dir / v) for k, v in (("markdown", f"{stem}.md"), ("csv", f"{stem}.csv"),
                                             ("json", f"{stem}.json"), ("plot", "accuracy_energy.png"))}


def paper_check() -> dict:
    return {"table1_formula": paper_mod.paper_formula_check(), "table2_ratios": paper_mod.paper_ratio_check(),
            "headline_saving": paper_mod.headline_saving()}


def paper_check_markdown(report) -> str:
    lines = ["# The paper's formula on the paper's own counts", "",
             "| dataset | model | AC (k) | MAC (k) | published mJ | recomputed mJ | difference | reproduced |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["table1_formula"]:
        lines.append(f"| {r.get('dataset')} | {r.get('model')} | {r.get('ac_k')} | {r.get('mac_k')} | "
                     f"{r.get('published_mj')} | {_fmt(r.get('recomputed_mj'))} | "
                     f"{_fmt(r.get('rel_diff'))} | {'yes' if r.get('reproduced') else 'NO'} |")
    return "\n".join(lines) + "\n"
