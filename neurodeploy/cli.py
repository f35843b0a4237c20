"""The ``neurodeploy`` command: a thin layer over the library (typer + rich).

Every reporting command takes ``--json`` and then prints one JSON object on
stdout; human text, tables and progress bars go to stderr / stdout as usual.
Errors are one line on stderr and a non-zero exit; ``--debug`` shows the
traceback.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text
from rich.table import Table

from .errors import NeurodeployError, first_line

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deploy spiking CNNs through NIR to Lava/Loihi and a PyTorch reference backend, "
                       "and measure what an inference costs.")
setup_app = typer.Typer(help="Create the runtimes that optional targets need.", no_args_is_help=True)
app.add_typer(setup_app, name="setup")
err = Console(stderr=True, soft_wrap=True)   # an error stays one line
out = Console(width=None if sys.stdout.isatty() else 140)
STATE = {"debug": False}


def _version(value: bool):
    if value:
        from . import __version__
        out.print(f"neurodeploy {__version__}")
        raise typer.Exit()


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    STATE["debug"] = debug
    # the command's own process: the CPU settings the compiled loops run best with (before torch loads)
    from .kernels.process import tune_for_cpu
    tune_for_cpu()


class _StatusColumn(ProgressColumn):
    """The task's ``status`` field (loss, accuracy, ...) when it has one."""

    def render(self, task):
        return Text(str(task.fields.get("status", "")))


LAVA_BATCH = 128   # samples per Lava network in validate: its start-up (~5 s) spread, ~0.7 GB for pruned_squeezenet


def progress_bar() -> Progress:
    # a torchrun job shows rank 0's bar (of the whole batch)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), _StatusColumn(), console=err, transient=False,
                    disable=not _main_process())


def emit(obj: dict, as_json: bool, render=None):
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    elif render:
        render(obj)


def _jsonable(o):
    import numpy as np
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(type(o).__name__)


def _table(title, columns, rows):
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)) for v in r])
    out.print(t)


def _csv(value: Optional[str]) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


# ----------------------------------------------------------------------------- zoo
@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """List the model zoo: family, classes, input, parameters, MACs, checkpoints, accuracy."""
    from .training import zoo
    rows = zoo.listing()

    def render(o):
        _table(f"model zoo ({zoo.zoo_dir()})",
               ["name", "family", "classes", "input", "params", "CNN MACs", "snn.pt", "cnn.pt", "dataset",
                "SNN acc", "CNN acc", "T"],
               [[r["name"], r["family"], r["classes"], "x".join(map(str, r["input"])), f"{r['parameters']:,}",
                 f"{r['cnn_macs'] / 1e6:.1f} M", "yes" if r["snn_checkpoint"] else "no",
                 "yes" if r["cnn_checkpoint"] else "no", r["dataset"], r["snn_test_accuracy"],
                 r["cnn_test_accuracy"], r["timesteps"]] for r in o["models"]])
    emit({"zoo": str(zoo.zoo_dir()), "models": rows}, as_json, render)


@app.command()
def targets(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """List hardware targets (energy constants, with sources) and the backends that run graphs."""
    from . import backends
    from .backends.lava import runtime
    from .measure import energy
    lava = runtime.runtime_status()
    hardware = []
    for name in energy.target_names():
        t = energy.load_target(name)
        hardware.append({"name": name, "description": t.description, "kind": t.kind, "backend": t.backend})
    runners = []
    for b in backends.BACKENDS.values():
        needs_lava = b.module.endswith(".lava")
        runners.append({"name": b.name, "description": b.description,
                        "runtime_available": lava["installed"] if needs_lava else True,
                        "runtime": (lava.get("path") if lava["installed"] else lava.get("reason")) if needs_lava
                        else "this environment"})

    def render(o):
        _table("hardware targets (energy --targets)", ["name", "kind", "counts from", "description"],
               [[r["name"], r["kind"], r["backend"], r["description"]] for r in o["targets"]])
        _table("backends (run --target, validate --targets)", ["name", "runtime ok", "description / runtime"],
               [[r["name"], "yes" if r["runtime_available"] else "no",
                 r["description"] if r["runtime"] == "this environment" else f"{r['description']}; {r['runtime']}"]
                for r in o["backends"]])
    emit({"targets": hardware, "backends": runners, "lava_runtime": lava}, as_json, render)


@setup_app.command("lava")
def setup_lava(force: bool = typer.Option(False, help="Re-create the runtime even if one exists.")):
    """Create (or reuse) the Lava runtime: a Python 3.10 venv with lava-dl 0.6.0, outside the work tree."""
    from .backends.lava import runtime
    status = runtime.runtime_status()
    if status["installed"] and not force:
        err.print(f"Lava runtime already installed at {status['path']}")
        return
    runtime.install_runtime(log=lambda m: err.print(m), force=force)
    err.print(f"Lava runtime ready at {runtime.runtime_path()}")


# ----------------------------------------------------------------------------- training
SYNC_BN_HELP = ("Under torchrun: BatchNorm normalises with the statistics of the whole batch, all processes "
                "together (SyncBatchNorm), not of each process's share. No effect in one process.")


def _main_process() -> bool:
    """Rank 0 of a torchrun job, or the only process: the one that reports."""
    from .training.distributed import is_main
    return is_main()


@app.command()
def train(model: str = typer.Option(..., "--model", "-m", help="Zoo architecture name (see `neurodeploy models`)."),
          dataset: str = typer.Option("mnist5k", help="mnist5k (embedded), cifar10, cifar100, tinyimagenet."),
          twin: str = typer.Option("snn", help="snn (LIF) or cnn (ReLU) twin."),
          timesteps: int = typer.Option(4, "--timesteps", "-T", help="Timesteps T of the spiking twin."),
          epochs: int = typer.Option(6, help="Training epochs."),
          batch_size: int = typer.Option(64, help="Batch size."),
          lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, one-cycle schedule)."),
          seed: int = typer.Option(0, help="Random seed."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          data_dir: Optional[Path] = typer.Option(None, help="Folder holding CIFAR / TinyImageNet files."),
          augment: bool = typer.Option(False, help="Random crop (+ flip for natural images)."),
          fires: Optional[str] = typer.Option(None, help="SqueezeNet only: Fire modules to keep, e.g. 4,6,8,9."),
          limit: Optional[int] = typer.Option(None, help="Train on the first N training samples only."),
          init_from: Optional[Path] = typer.Option(None, help="Start from this checkpoint's weights (e.g. the "
                                                              "CNN twin's, or a spiking twin to fine-tune)."),
          loihi_aware: bool = typer.Option(False, help="Fine-tune on Loihi's 8-bit weight grid (BatchNorm frozen), "
                                                       "so that the Lava target reproduces the network; use with "
                                                       "--init-from a trained spiking twin."),
          sync_bn: bool = typer.Option(False, "--sync-bn", help=SYNC_BN_HELP),
          output: Path = typer.Option(None, "-o", "--output", help="Output folder (default: models/NAME in the zoo)."),
          as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON.")):
    """Surrogate-gradient training with a progress bar; saves the best checkpoint and its model card.

    Data-parallel: `torchrun --nproc-per-node N -m neurodeploy train ...` (--batch-size is then the
    batch of all N processes together; rank 0 writes)."""
    from .validation import int_list, options
    options(timesteps=timesteps, epochs=epochs, batch_size=batch_size, lr=lr, device=device, twin=twin, limit=limit,
            seed=seed, output_folder=output)
    from .training import zoo
    from .architectures import check_name
    from .training.data import get_info
    from .training.train import TrainConfig, train as run_training
    check_name(model)
    get_info(dataset)
    arguments = {"fires": int_list("--fires", fires, range(2, 10))} if fires is not None else {}
    cfg = TrainConfig(model=model, dataset=dataset, twin=twin, timesteps=timesteps, epochs=epochs,
                      batch_size=batch_size, lr=lr, seed=seed, device=device,
                      data_dir=str(data_dir) if data_dir else None, augment=augment, arguments=arguments, limit=limit,
                      init_from=str(init_from) if init_from else None, loihi_aware=loihi_aware)
    out_dir = output or (zoo.zoo_dir() / model)
    with progress_bar() as p:
        card = run_training(cfg, out_dir, progress=p, sync_bn=sync_bn)
    if _main_process():
        err.print(f"saved {out_dir / (twin + '.pt')}: test accuracy {card['test_accuracy']:.4f}, "
                  f"macro-F1 {card['test_macro_f1']:.4f}")
        emit(card, as_json)


@app.command("train-zoo")
def train_zoo(models_: Optional[str] = typer.Option(None, "--models", help="Comma-separated zoo models (default: all)."),
              twins: str = typer.Option("snn,cnn", help="Which twins to train."),
              device: str = typer.Option("auto", help="auto, cpu or cuda.")):
    """Re-train the committed zoo on mnist5k with the recorded recipes (both twins of every model)."""
    from .validation import choice, options
    options(device=device)
    for t in _csv(twins) or [twins]:
        choice("--twins", t, ("snn", "cnn"))
    from .training import zoo
    from .architectures import check_name
    from .training.train import train as run_training
    names = [check_name(n) for n in _csv(models_)] or list(zoo.RECIPES)
    with progress_bar() as p:
        for name in names:
            for stage in [s for s in zoo.RECIPES[name] if zoo.stage_twin(s) in _csv(twins)]:
                card = run_training(zoo.recipe_config(name, stage, device=device), zoo.zoo_dir() / name, progress=p)
                err.print(f"{name}/{stage}: test accuracy {card['test_accuracy']:.4f}")


@app.command()
def prune(model: str = typer.Option("squeezenet", "--model", "-m", help="Model to prune."),
          keep_fires: Optional[str] = typer.Option(None, help="Fire modules to keep (SqueezeNet), e.g. 4,6,8,9."),
          channel_ratio: Optional[float] = typer.Option(None, help="L1-norm structured channel pruning: fraction "
                                                                   "of each conv's output channels to remove."),
          from_checkpoint: Optional[Path] = typer.Option(None, "--from", help="Checkpoint to start from "
                                                                                "(default: the zoo's)."),
          epochs: int = typer.Option(3, help="Fine-tuning epochs."),
          lr: float = typer.Option(1e-3, help="Fine-tuning peak learning rate."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          limit: Optional[int] = typer.Option(None, help="Fine-tune on the first N training samples only."),
          sync_bn: bool = typer.Option(False, "--sync-bn", help=SYNC_BN_HELP),
          output: Path = typer.Option(Path("pruned"), "-o", "--output", help="Output folder."),
          as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Remove Fire modules (SqueezeNet) or L1-smallest channels, fine-tune, report before/after."""
    from .training import prune as pruning
    from .architectures import check_name
    from .validation import int_list, options
    check_name(model)
    options(epochs=epochs, lr=lr, device=device, limit=limit, channel_ratio=channel_ratio, output_folder=output)
    fires = int_list("--keep-fires", keep_fires, range(2, 10)) if keep_fires is not None else None
    if (keep_fires is None) == (channel_ratio is None):
        raise NeurodeployError("give exactly one of --keep-fires (SqueezeNet) or --channel-ratio")
    with progress_bar() as p:
        if keep_fires is not None:
            report = pruning.prune_fires(model, fires, from_checkpoint, output, epochs=epochs, lr=lr,
                                         device=device, limit=limit, progress=p, sync_bn=sync_bn)
        else:
            report = pruning.prune_channels(model, channel_ratio, from_checkpoint, output, epochs=epochs, lr=lr,
                                            device=device, limit=limit, progress=p, sync_bn=sync_bn)
    if not _main_process():
        return
    emit(report, as_json, lambda o: _table("pruning", ["", "parameters", "test accuracy"],
                                           [["before", f"{o['before']['parameters']:,}", o["before"]["test_accuracy"]],
                                            ["after", f"{o['after']['parameters']:,}", o["after"]["test_accuracy"]]]))


# ----------------------------------------------------------------------------- export / check
@app.command()
def export(model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo model to export."),
           checkpoint_path: Optional[Path] = typer.Option(None, "--checkpoint", help="Any checkpoint this toolkit "
                                                                                      "wrote (default: the zoo's)."),
           module: Optional[str] = typer.Option(None, "--module", help="Your own network: FILE.py:NAME, NAME a "
                                                                      "module class (no-argument constructor) or a "
                                                                      "function returning a module."),
           weights: Optional[Path] = typer.Option(None, "--weights", help="--module: a state_dict (.pt) to load."),
           input_shape: Optional[str] = typer.Option(None, "--input-shape", help="--module: the per-sample input "
                                                                                "shape, e.g. 1,28,28."),
           snap: bool = typer.Option(False, "--snap", help="--module: put weights on the exact power-of-two grid "
                                                           "first (every sum over spikes exact; reports what it "
                                                           "changed)."),
           dt: Optional[float] = typer.Option(None, help="--module: dt recorded in the graph (default snnTorch's "
                                                         "1e-4, so that beta = 1 - dt/tau)."),
           input_file: Optional[Path] = typer.Option(None, "--input", help="--module: .npy inputs (N, ...) to check "
                                                                           "the export on (default: 16 random)."),
           require_exact: bool = typer.Option(False, "--require-exact", help="--module: exit 1 unless the graph "
                                                                             "reproduces the module spike for spike."),
           loihi_grid: bool = typer.Option(False, "--loihi-grid", help="--module: round weights, decays and "
                                                                       "thresholds to Loihi's fixed-point grid, as "
                                                                       "the Lava target will (reports the change)."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (default: NAME.nir)."),
           fmt: str = typer.Option("nir", "--format", help="nir, onnx or netx."),
           twin: str = typer.Option("snn", help="onnx only: snn (one timestep, explicit state) or cnn."),
           timesteps: Optional[int] = typer.Option(None, "--timesteps", "-T", help="T recorded in the graph "
                                                                                    "(default: the trained T; "
                                                                                    "--module: 8)."),
           as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON.")):
    """Export a spiking network to NIR (exact lowering), ONNX or Lava-DL netx: a zoo model, a
    checkpoint, or your own torch / snnTorch module."""
    from .validation import options
    options(timesteps=timesteps, fmt=fmt, twin=twin, output_file=output)
    if module is not None:
        if model or checkpoint_path:
            raise NeurodeployError("give --module or --model/--checkpoint, not both")
        return _export_module(module, weights, input_shape, timesteps or 8, dt, snap, input_file, require_exact,
                              loihi_grid, output, fmt, as_json)
    if model is not None and checkpoint_path is not None:   # both given: they must agree
        from .training.checkpoint import check_model
        check_model(checkpoint_path, model)
    from .training import checkpoint, zoo
    from .architectures import check_name
    if checkpoint_path is None:
        if model is None:
            raise NeurodeployError("give --model NAME (a zoo model), --checkpoint PATH or --module FILE.py:NAME")
        check_name(model)
        checkpoint_path = zoo.checkpoint_path(model, twin if fmt == "onnx" else "snn")
        if not checkpoint_path.exists():
            raise NeurodeployError(zoo.missing_checkpoint(model, twin if fmt == "onnx" else "snn"))
    net = checkpoint.load(checkpoint_path, timesteps=timesteps)
    name = model or net.name
    if fmt == "nir":
        from .exporters.lowering import export_checkpoint_model
        from .ir.io import write_graph
        output = output or Path(f"{name}.nir")
        graph = export_checkpoint_model(net, checkpoint_path)
        write_graph(output, graph)
        from .check import summarize
        summary = {k: v for k, v in summarize(graph).items() if not k.endswith("_table")}
    elif fmt == "onnx":
        from .exporters import onnx as onnx_export
        output = output or Path(f"{name}{'' if net.twin.spiking else '_cnn'}.onnx")
        summary = onnx_export.export_onnx(net, output)
    elif fmt == "netx":
        from .exporters.lowering import export_checkpoint_model
        from .backends.lava import netx
        output = output or Path(f"{name}.netx.h5")
        summary = netx.write_netx(export_checkpoint_model(net, checkpoint_path), output)
    else:
        raise NeurodeployError(f"unknown format {fmt!r}; choose nir, onnx or netx")
    err.print(f"wrote {output}")
    emit({"output": str(output), "format": fmt, "checkpoint": str(checkpoint_path), **summary}, as_json)


def _export_module(spec, weights, input_shape, timesteps, dt, snap, input_file, require_exact, loihi_grid, output,
                   fmt, as_json):
    """export --module: load the user's network, export it, check it spike for spike, write it."""
    import numpy as np
    from .check import summarize
    from .exporters.module import export as export_module
    from .measure.exactness import verify
    from .exporters.user import load_module, parse_shape
    from .ir.io import write_graph
    if fmt != "nir":
        raise NeurodeployError("--module exports to NIR (--format nir); other formats take zoo models")
    if input_shape is None:
        raise NeurodeployError("--module needs --input-shape, the per-sample input shape, e.g. 1,28,28")
    shape = parse_shape(input_shape)
    net, name = load_module(spec, weights)
    graph = export_module(net, shape, timesteps=timesteps, dt=dt, snap=snap, name=name)
    grid = None
    if loihi_grid:
        from .backends.lava.grid import on_loihi_grid
        from .ir.conventions import conventions_of, replace, with_conventions
        graph, grid = on_loihi_grid(graph)
        conv = conventions_of(graph)
        with_conventions(graph, replace(conv, extra={**conv.extra, "on_loihi_grid": True}))
    if input_file is not None:
        from .measure.inputs import _load_npy
        x = _load_npy(input_file, "input")[:64]
        if tuple(x.shape[1:]) != shape:
            raise NeurodeployError(f"{input_file}: samples of shape {tuple(x.shape[1:])}, but --input-shape is {shape}")
        checked_on = f"{len(x)} samples of {input_file.name}"
    else:
        x = np.random.default_rng(0).random((16,) + shape, dtype=np.float32)
        checked_on = "16 random inputs in [0, 1) (give --input for real data)"
    report = verify(net, graph, x, timesteps, snap=snap)
    output = output or Path(f"{name}.nir")
    write_graph(output, graph)
    summary = {k: v for k, v in summarize(graph).items() if not k.endswith("_table")}
    result = {"output": str(output), "format": "nir", "module": spec, "checked_on": checked_on,
              "exactness": report, **summary}
    if grid is not None:
        result["loihi_grid_max_relative_weight_change"] = max(grid.values(), default=0.0)

    def render(o):
        e = o["exactness"]
        vs = e["graph_vs_module"]
        pops = vs["populations"]
        out.print(f"wrote {o['output']}: {o['populations']} populations, {o['projections']} projections")
        out.print(f"checked on {o['checked_on']}, T={e['timesteps']}: outputs "
                  + ("identical to the module's" if vs["identical_outputs"] else
                     f"{vs['output_value_agreement']:.2%} of values equal, predictions agree "
                     f"{vs['prediction_agreement']:.2%}")
                  + f"; {vs['identical_populations']}/{len(pops)} populations spike identically")
        if "loihi_grid_max_relative_weight_change" in o:
            out.print(f"on Loihi's grid: weights moved by up to {o['loihi_grid_max_relative_weight_change']:.2%} "
                      "of a layer's largest; the differences above are that rounding, which Lava applies too")
        elif snap:
            s = e["snap_vs_module"]
            out.print(f"--snap changed the module's outputs in {1 - s['output_value_agreement']:.2%} of values "
                      f"(predictions agree {s['prediction_agreement']:.2%}); the graph reproduces the snapped "
                      f"module: {'exactly' if e['graph_vs_deployed']['identical_outputs'] else 'NOT exactly'}")
        if not snap and not e["exact"] and "loihi_grid_max_relative_weight_change" not in o:
            out.print("[yellow]not bit-exact[/]: folding or splitting changed float rounding; --snap makes every "
                      "sum over spikes exact")
    emit(result, as_json, render)
    if require_exact and not (report["graph_vs_deployed"]["identical_outputs"] if snap else report["exact"]):
        err.print("the exported graph does not reproduce the module exactly (--require-exact)")
        raise typer.Exit(1)


@app.command()
def check(file: Path = typer.Argument(..., help="A .nir file (ours or any tool's)."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Load, type-check and lint a NIR graph; say which reset each population uses and what each
    backend can run."""
    from .check import check as check_graph
    from .ir.io import read_graph
    report = check_graph(read_graph(file))

    def render(o):
        out.print(f"[bold]{file}[/]: {o['nodes']} nodes, {o['edges']} edges, {o['populations']} populations "
                  f"({o['neurons']:,} neurons), {o['projections']} projections, {o['parameters']:,} parameters "
                  f"({o['synaptic_weights_nonzero']:,} nonzero weights)")
        out.print(f"input {o['input_shape']} -> output {o['output_shape']}; node types: "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(o["node_types"].items())))
        out.print(f"type check: {o['type_check']}")
        resets = o["conventions"].get("population_reset") or {}
        if resets:
            by_mode: dict = {}
            for pop, mode in resets.items():
                by_mode.setdefault(mode, []).append(pop)
            out.print("reset: " + "; ".join(f"{mode} ({', '.join(pops)})" for mode, pops in by_mode.items())
                      + "; every other population resets to v_reset (NIR)")
        for w in o["warnings"]:
            out.print(f"[yellow]warning[/]: {w}")
        _table("targets", ["target", "can run", "why"],
               [[k, "yes" if v["ok"] else "no", v["why"]] for k, v in o["targets"].items()])
    emit({"file": str(file), **report}, as_json, render)
    if not str(report["type_check"]).startswith("ok"):
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- running
def _load(file, dataset, input_file, labels, samples, data_dir):
    from .ir.io import read_graph
    from .measure.inputs import load_inputs
    graph = read_graph(file)
    return graph, load_inputs(graph, dataset, input_file, samples, data_dir, labels)


def _warn_if_silent(outputs, source: str) -> None:
    """A network whose output never spikes is almost always a convention mismatch: say so."""
    import numpy as np
    if outputs.size and not np.any(outputs):
        err.print(f"[yellow]warning[/]: the output never spiked on {source}; a silent network is almost always "
                  "a convention mismatch (dt, how IF integrates, reset): see `neurodeploy check` and --dt")


def _peak_memory(program) -> int:
    """Peak GPU memory of a CUDA program, else this process's peak resident memory."""
    device = getattr(program, "device", None)
    if device is not None and device.type == "cuda":
        import torch
        return int(torch.cuda.max_memory_allocated())
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


INPUT_HELP = ".npy inputs: (N, *input) static or (T, N, *input) sequences (instead of a dataset)."


@app.command()
def run(file: Path = typer.Argument(..., help="A .nir file."),
        target: str = typer.Option("torch", help="Backend: torch, lava (Loihi fixed point), lava-netx (fixed "
                                                 "point as netx feeds input), lava-float, model or onnx."),
        dataset: Optional[str] = typer.Option(None, help="Dataset to run (default: the graph's, else mnist5k)."),
        input_file: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
        labels: Optional[Path] = typer.Option(None, "--labels", help=".npy labels (N,) for --input: accuracy."),
        samples: int = typer.Option(256, help="How many test samples."),
        timesteps: Optional[int] = typer.Option(None, "--timesteps", "-T", help="Override T."),
        batch_size: int = typer.Option(64, help="Batch size."),
        device: str = typer.Option("auto", help="auto, cpu or cuda (torch)."),
        kernels: str = typer.Option("auto", help="torch on CPU: the projection kernels. auto (the fastest, "
                                                 "timed on the first batches, of those that give the dense "
                                                 "kernel's exact bits), dense, int8 or events."),
        dt: Optional[float] = typer.Option(None, help="Override dt for graphs without metadata."),
        data_dir: Optional[Path] = typer.Option(None, help="Folder holding CIFAR / TinyImageNet files."),
        save_output: Optional[Path] = typer.Option(None, help="Write the output node's values (T, N, ...) here."),
        save_counts: Optional[Path] = typer.Option(None, help="Write the counters as JSON (for `energy --counts`)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Inference on a dataset or given input: predictions, accuracy, throughput and hardware counters."""
    from .validation import options
    options(samples=samples, timesteps=timesteps, batch_size=batch_size, dt=dt, device=device, save_output=save_output,
            save_counts=save_counts)
    import numpy as np
    from . import backends
    from .fsutil import atomic_output
    from .ir.counters import neurobench_report
    from .ir.io import file_sha256
    from .measure.compare import predictions
    from .measure.metrics import accuracy, macro_f1
    graph, inputs = _load(file, dataset, input_file, labels, samples, data_dir)
    program = backends.compile(target, graph, source=file, device=device, dt=dt, kernels=kernels)   # (torch's)
    with progress_bar() as p:
        result = program.run(inputs.x, timesteps, batch_size, progress=p)
    result.counters.graph_sha256 = file_sha256(file)
    _warn_if_silent(result.outputs, inputs.source)
    pred = predictions(result.outputs)
    n = int(result.outputs.shape[1])
    report = {"file": str(file), "target": target, "inputs": inputs.source, "samples": n,
              "timesteps": int(result.outputs.shape[0]), "seconds": round(result.seconds, 3),
              "samples_per_second": round(n / max(result.seconds, 1e-9), 2),
              "peak_memory_bytes": _peak_memory(program), "predictions": pred.tolist()}
    if hasattr(program, "kernel_choices"):
        report["kernels"] = {k: v for k, v in program.kernel_choices().items() if v != "dense"}
    if inputs.labels is not None:
        report["accuracy"] = accuracy(inputs.labels, pred)
        report["macro_f1"] = macro_f1(inputs.labels, pred, int(result.outputs.shape[-1]))
    report["counters"] = result.counters.to_dict()
    report["neurobench"] = neurobench_report(result.counters, graph)
    if save_output:
        with atomic_output(save_output, suffix=".npy") as tmp:
            np.save(tmp, result.outputs)
    if save_counts:
        with atomic_output(save_counts, suffix=".json") as tmp:
            tmp.write_text(json.dumps(report["counters"], indent=2))

    def render(o):
        tot = o["counters"]["totals_per_sample"]
        acc = f", accuracy {o['accuracy']:.4f}, macro-F1 {o['macro_f1']:.4f}" if "accuracy" in o else ""
        out.print(f"{o['inputs']} x {o['timesteps']} steps on {target}: {o['samples_per_second']:.1f} "
                  f"samples/s{acc}")
        out.print(f"per sample: {tot['spikes']:.0f} spikes, {tot['effective_acs'] / 1e6:.3f} M ACs, "
                  f"{tot['effective_macs'] / 1e6:.3f} M MACs, {tot['neuron_updates'] / 1e6:.3f} M neuron updates")
        out.print(_neurobench_line(o["neurobench"]))
    emit(report, as_json, render)


def _neurobench_line(nb: dict) -> str:
    """NeuroBench's metrics in its names (per sample; Footprint and ConnectionSparsity of the graph)."""
    ops = nb["SynapticOperations"]
    return (f"NeuroBench: Effective_ACs {ops['Effective_ACs']:.6g}, Effective_MACs {ops['Effective_MACs']:.6g}, "
            f"Dense {ops['Dense']:.6g}, ActivationSparsity {nb['ActivationSparsity']:.4f}, MembraneUpdates "
            f"{nb['MembraneUpdates']:.6g}, Footprint {nb['Footprint']} B, ConnectionSparsity "
            f"{nb['ConnectionSparsity']:.4f}")


def _render_validation(o):
    rows = []
    for name, e in o["targets"].items():
        rows.append([name, f"{e['agreement']:.4f}", e.get("accuracy"), "yes" if e["identical_outputs"] else "no",
                     f"{e['max_output_difference']:.3g}", e["first_divergent_population"] or "-"])
    _table(f"validation against {o['reference']} ({o['inputs']})",
           ["target", "agreement", "accuracy", "identical", "max out diff", "first divergent population"], rows)
    for name, e in o["targets"].items():
        if name == o["reference"] or not e["populations"]:
            continue
        worst = sorted(e["populations"].items(), key=lambda kv: -kv[1]["relative_difference"])[:5]
        out.print(f"{name}: largest per-population spike-count differences: " + ", ".join(
            f"{k} {v['relative_difference']:.2%}" for k, v in worst))
        w = e.get("weight_quantisation")
        if w:
            worst = ("" if w["exact_layers"] == w["layers"] else
                     f"; worst {w['worst_relative_error']:.2%} of a layer's largest weight ({w['worst_layer']}), "
                     "--loihi-aware training puts them on it")
            out.print(f"{name}: 8-bit weights: {w['exact_layers']}/{w['layers']} layers exactly on the grid"
                      f"{worst}; {w['clipped']} clipped")
        over = e.get("current_overflows")
        if over is not None:
            out.print(f"{name}: 24-bit input currents: " + (
                "none wrapped" if not over else f"{sum(over.values())} wrapped (" +
                ", ".join(f"{k} {v}" for k, v in over.items()) + "): the state is too fine for this "
                "input; target lava-netx (coarser state) avoids it"))


@app.command()
def validate(file: Path = typer.Argument(..., help="A .nir file."),
             targets_: str = typer.Option("model,torch", "--targets", help="Comma-separated backends: model, torch, "
                                                                          "lava, lava-netx, lava-float, onnx. The "
                                                                          "first is the reference."),
             samples: int = typer.Option(100, help="How many test samples."),
             dataset: Optional[str] = typer.Option(None, help="Dataset (default: the graph's)."),
             input_file: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
             labels: Optional[Path] = typer.Option(None, "--labels", help=".npy labels (N,) for --input: accuracy."),
             timesteps: Optional[int] = typer.Option(None, "--timesteps", "-T", help="Override T."),
             dt: Optional[float] = typer.Option(None, help="Override dt for graphs without metadata."),
             batch_size: int = typer.Option(64, help="Batch size."),
             lava_batch: int = typer.Option(LAVA_BATCH, help="Samples per Lava network (lava targets): they run "
                                                            "back to back in one network, each exactly as alone; "
                                                            "more per network spreads its start-up, costs memory."),
             device: str = typer.Option("cpu", help="Device for model/torch (cpu keeps comparisons bit-exact)."),
             min_agreement: float = typer.Option(0.0, help="Exit non-zero if any target's prediction agreement "
                                                          "with the reference is below this (0..1)."),
             data_dir: Optional[Path] = typer.Option(None, help="Folder holding CIFAR / TinyImageNet files."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Differential run: prediction agreement and per-population spike differences between backends."""
    from .validation import options
    options(samples=samples, timesteps=timesteps, dt=dt, batch_size=batch_size, lava_batch=lava_batch,
            device=device, min_agreement=min_agreement)
    from . import backends
    from .ir.nodes import POPULATIONS
    from .ir.topology import flatten_graph
    from .measure.compare import compare
    names = _csv(targets_)
    for t in names:
        backends.get(t)
    if len(names) < 2:
        raise NeurodeployError("give at least two backends to compare, e.g. --targets model,torch")
    graph, inputs = _load(file, dataset, input_file, labels, samples, data_dir)
    for t in names:                 # refuse before running anything
        backends.require(t, graph)
    results = {}
    with progress_bar() as p:
        for t in names:
            err.print(f"running {t} on {inputs.source} ...")
            program = backends.compile(t, graph, source=file, device=device, dt=dt)
            lava = backends.get(t).module.endswith(".lava")
            results[t] = program.run(inputs.x, timesteps, lava_batch if lava else batch_size, progress=p)
            _warn_if_silent(results[t].outputs, f"{t} ({inputs.source})")
    order = [k for k, v in flatten_graph(graph)[0].items() if isinstance(v, POPULATIONS)]
    report = {"file": str(file), "inputs": inputs.source, **compare(results, inputs.labels, order)}
    emit(report, as_json, _render_validation)
    worst = min(e["agreement"] for e in report["targets"].values())
    if worst < min_agreement:
        err.print(f"agreement {worst:.4f} is below --min-agreement {min_agreement}")
        raise typer.Exit(1)


@app.command()
def energy(file: Path = typer.Argument(..., help="A .nir file."),
           targets_: str = typer.Option("cmos45nm,loihi", "--targets", help="Comma-separated hardware targets "
                                                                           "(see `neurodeploy targets`)."),
           dataset: Optional[str] = typer.Option(None, help="Dataset to measure counts on (default: the graph's)."),
           input_file: Optional[Path] = typer.Option(None, "--input", help=INPUT_HELP),
           samples: int = typer.Option(100, help="How many test samples."),
           timesteps: Optional[int] = typer.Option(None, "--timesteps", "-T", help="Override T."),
           dt: Optional[float] = typer.Option(None, help="Override dt for graphs without metadata."),
           counts: Optional[Path] = typer.Option(None, help="Counters JSON from `run --save-counts` instead of "
                                                            "running."),
           backend: str = typer.Option("torch", help="Backend the counts are measured on: torch or lava."),
           device: str = typer.Option("auto", help="auto, cpu or cuda (torch)."),
           data_dir: Optional[Path] = typer.Option(None, help="Folder holding CIFAR / TinyImageNet files."),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Energy per inference per hardware target from measured counts, with the CNN twin beside it."""
    from .validation import options
    options(samples=samples, timesteps=timesteps, dt=dt, device=device)
    from .reports.energy_report import energy_report
    graph, inputs = None, None
    if counts is None:
        graph, inputs = _load(file, dataset, input_file, None, samples, data_dir)
    report = energy_report(file, _csv(targets_), inputs=inputs, counts_file=counts, backend=backend,
                           device=device, timesteps=timesteps, dt=dt, graph=graph)

    def render(o):
        def mj(v):
            return "" if v is None else f"{v * 1e3:.5f}"
        rows = [[t["target"], mj(t["dynamic_j"]), mj(t["static_j"]), mj(t["total_j"]),
                 "" if t["latency_s"] is None else f"{t['latency_s'] * 1e3:.4g}",
                 "" if t["edp_js"] is None else f"{t['edp_js'] * 1e6:.4g}",
                 f"{t['cnn_over_snn']:.2f}x", f"{t['cnn_gpu_over_snn']:.2f}x",
                 "" if t["memory_aware"] is None else f"{t['memory_aware']['ratio_with_memory']:.2f}x",
                 "" if not t.get("mapping") else t["mapping"].get("error") or
                 f"{t['mapping']['cores']} cores, {t['mapping']['chips']} chip(s)" +
                 ("" if t["mapping"]["fits"] else ", DOES NOT FIT")]
                for t in o["targets"]]
        _table(f"energy per inference, {o['inputs']} ({o['backend']} counts)",
               ["target", "SNN dynamic (mJ)", "static (mJ)", "total (mJ)", "latency (ms)", "EDP (mJ ms)",
                "CNN twin on 45 nm MACs / SNN", "CNN twin on GPU (est.) / SNN",
                "with memory, this target (Lemaire)", "mapping"], rows)
        tot = o["counts_per_sample"]
        twin = o["cnn_twin_j"]
        out.print(f"per sample: {tot['effective_acs'] / 1e6:.3f} M ACs, {tot['effective_macs'] / 1e6:.3f} M MACs, "
                  f"{tot['spikes']:.0f} spikes; CNN twin {o['cnn_macs'] / 1e6:.3f} M MACs = "
                  f"{twin['cmos45nm'] * 1e3:.5f} mJ on 45 nm CMOS MACs, {twin['gpu'] * 1e3:.5f} mJ on the GPU "
                  f"estimate (a CNN runs on CNN hardware, not on a neuromorphic chip)")
        out.print(_neurobench_line(o["neurobench"]))
        for t in o["targets"]:
            m = t.get("mapping") or {}
            if m.get("static_source") and not m.get("static_power_w"):
                why = m["static_source"].split(":")[0]
                out.print(f"{t['target']} static power: {why} (targets/{t['target']}.toml)")
    emit(report, as_json, render)


def _ranges(ids) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (at most a few groups, then a count)."""
    ids = sorted(ids)
    groups, start = [], None
    for i, v in enumerate(ids):
        if start is None:
            start = v
        if i + 1 == len(ids) or ids[i + 1] != v + 1:
            groups.append(f"{start}-{v}" if v > start else f"{v}")
            start = None
    return ", ".join(groups) if len(groups) <= 3 else f"{', '.join(groups[:2])}, ... ({len(groups)} runs)"


@app.command("map")
def map_(file: Path = typer.Argument(..., help="A .nir file."),
         target: str = typer.Option("loihi2", "--target", help="Hardware target with cores: loihi2, loihi1 "
                                                              "(alias loihi), truenorth, spinnaker2, speck, or a "
                                                              ".toml with a [mapping] table."),
         counts: Optional[Path] = typer.Option(None, help="Counters JSON from `run --save-counts`: time from the "
                                                          "measured activity, and energy (default: time is an upper "
                                                          "bound, every synapse active every step)."),
         timesteps: Optional[int] = typer.Option(None, "--timesteps", "-T", help="Override T."),
         plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the placement on the cores."),
         cores: bool = typer.Option(False, "--cores", help="List every core in the JSON."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Place a graph on a chip: cores and chips per population and why, utilisation, time, verdict."""
    from .reports.mapping_report import map_report
    report = map_report(file, target, counts_file=counts, timesteps=timesteps, plot=plot, cores=cores)

    def render(o):
        words = {"neurons": "neurons", "in_axons": "input axons", "out_axons": "output axons",
                 "syn_bits": "synaptic memory", "mem_bits": "core memory", "layer": "one layer per core",
                 "fan-out": "sources' fan-out"}
        rows = []
        for p in o["populations"]:
            syn = f"{p['synapses']:,}" + (f" (+{p['host_synapses']:,} host)" if p["host_synapses"] else "")
            rows.append([p["name"], "x".join(map(str, p["shape"])), f"{p['neurons']:,}", syn, f"{p['max_fan_in']:,}",
                         "REFUSED" if p["unplaceable"] else f"{len(p['cores'])}: {_ranges(p['cores'])}" +
                         (f" +{len(p['copy_cores'])} copy cores" if p.get("copy_cores") else ""),
                         ",".join(p["encodings"]), words.get(p["binding"], p["binding"] or "-"), p["why"]])
        _table(f"{o['file']} on {o['target']} ({o['description']})",
               ["population", "shape", "neurons", "synapses on cores", "max fan-in", "cores", "encoding",
                "binds", "why"], rows)
        tot = o["totals"]
        util = ", ".join(f"{words.get(k, k)} {v:.0%}" for k, v in tot["utilisation"].items())
        out.print(f"{tot['cores']:,} cores, {tot['chips']} chip(s), {tot['boards']} board(s); "
                  f"utilisation of the mapped cores: {util}")
        lat = o["latency"]
        if lat["inference_s"] is not None:
            out.print(f"time ({lat['model']} model, {lat['basis']}): {lat['step_s'] * 1e6:.4g} us per step, "
                      f"{lat['inference_s'] * 1e3:.4g} ms per inference of {lat['timesteps']} steps, "
                      f"{lat['inferences_per_s']:,.4g} inferences/s")
        else:
            out.print(f"time: not estimated ({lat['basis']})")
        e = o["energy"]
        if e:
            out.print(f"energy per inference: dynamic {e['dynamic_j'] * 1e3:.5f} mJ + static "
                      f"{(e['static_j'] or 0) * 1e3:.5f} mJ = {e['total_j'] * 1e3:.5f} mJ; EDP "
                      + ("-" if e["edp_js"] is None else f"{e['edp_js'] * 1e6:.4g} mJ ms"))
        for n in o["notes"]:
            out.print(f"note: {n}")
        for w in o["warnings"]:
            out.print(f"[yellow]warning[/]: {w}")
        if o.get("plot"):
            out.print(f"wrote {o['plot']}")
        colour = "green" if o["fits"] else "red"
        out.print(f"[bold {colour}]{o['verdict']}[/]")
        out.print(f"every limit and time above is a constant in neurodeploy/targets/{o['target']}.toml with its source "
                  f"(--json lists them)")
    emit(report, as_json, render)
    if not report["fits"]:
        raise typer.Exit(1)


@app.command()
def bench(dataset: str = typer.Option("mnist5k", help="Dataset to re-measure on."),
          models_: Optional[str] = typer.Option(None, "--models", help="Comma-separated zoo models (default: all)."),
          samples: int = typer.Option(200, help="Test samples per model."),
          output: Path = typer.Option(Path("bench"), "-o", "--output", help="Output folder."),
          paper: bool = typer.Option(False, "--paper", help="Check the paper's formula on its own counts."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Re-measure the paper's Tables 1 and 2 on this toolkit (Markdown, CSV, JSON and a plot)."""
    from .validation import options
    options(samples=samples, device=device, output_folder=output)
    from .reports import bench as bench_report
    if paper:
        report = bench_report.paper_check()
        emit(report, as_json, lambda o: out.print(bench_report.paper_check_markdown(o)))
        return
    with progress_bar() as p:
        report = bench_report.run_bench(_csv(models_) or None, dataset, samples, output, device, progress=p)
    emit(report, as_json, lambda o: out.print(Path(o["files"]["markdown"]).read_text()))


@app.command()
def sweep(spec: Path = typer.Argument(..., help="A sweep spec (.toml): models x datasets x timesteps x targets "
                                                "(see examples/sweep.toml)."),
          output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (default: the spec's "
                                                                            "name, e.g. sweep/)."),
          address: Optional[str] = typer.Option(None, "--address", help="Run on this Ray cluster (auto, HOST:6379 "
                                                                       "or ray://HOST:10001); default: a local Ray "
                                                                       "instance started for the sweep."),
          cpus: Optional[int] = typer.Option(None, "--cpus", help="Local instance: how many jobs run at once "
                                                                 "(default: the cores, at most one per task)."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Run a sweep on Ray: each job loads (or trains), exports, validates and prices one point of
    the grid; finished jobs are skipped on a re-run; the report is bench's (Markdown, CSV, JSON, plot)."""
    from .sweep import load_spec, run_sweep
    s = load_spec(spec)
    output = output or Path(spec.stem)
    with progress_bar() as p:
        report = run_sweep(s, output, address=address, cpus=cpus, progress=p, log=lambda m: err.print(m))

    def render(o):
        out.print(Path(o["files"]["markdown"]).read_text())
        err.print(f"{o['jobs']} jobs: {o['skipped']} skipped (finished before), {o['ran']} run, "
                  f"{len(o['failed'])} failed; report in {output}")
    emit(report, as_json, render)
    if report["failed"]:
        raise typer.Exit(1)


def entry():
    """Console entry point: one-line errors, exit codes, tracebacks only with --debug.

    Ctrl-C exits 130, SIGTERM 143 and SIGHUP 129 (128 + the signal), by the same path: the
    signal becomes an exception in the main thread, so the Lava worker's processes are
    stopped, temporary folders removed and partial outputs deleted on the way out."""
    previous = _handle_termination()
    try:
        _entry()
    finally:
        if STATE.get("terminating"):
            import gc
            gc.collect()     # half-built objects' __del__ run now, while the hook above is in place
        _restore_handlers(previous)


def _entry():
    try:
        rc = app(standalone_mode=False)
    except NeurodeployError as e:
        if STATE["debug"]:
            raise
        from rich.markup import escape
        err.print(f"[red]error[/]: {escape(str(e))}", highlight=False)   # "[mapping]" is text, not markup
        sys.exit(2)
    except KeyboardInterrupt as e:
        _exit_interrupted(e)
    except Exception as e:
        if _interrupt_of(e) is not None:     # typer turns KeyboardInterrupt into Exit(130)
            _exit_interrupted(_interrupt_of(e))
        usage = _usage_error(e)
        if usage is not None:
            usage.show()
            sys.exit(usage.exit_code)
        if type(e).__name__ in ("Exit", "Abort"):
            sys.exit(getattr(e, "exit_code", 1))
        if STATE["debug"]:
            raise
        from .fsutil import no_space
        if no_space(e):
            where = getattr(e, "filename", None)
            err.print(f"[red]error[/]: no space left on device{f' (writing {where})' if where else ''}",
                      highlight=False)
            sys.exit(2)
        err.print(f"[red]error[/]: {type(e).__name__}: {first_line(e)} (run with --debug for the traceback)",
                  highlight=False)
        sys.exit(1)
    if STATE.get("signal"):      # click returns Exit(130) for any KeyboardInterrupt: say which signal it was
        from .errors import Terminated
        _exit_interrupted(Terminated(STATE["signal"]))
    if rc == 130:                # Ctrl-C, after the same clean-up
        err.print("interrupted")
    sys.exit(rc if isinstance(rc, int) else 0)


def _handle_termination():
    """Ctrl-C, SIGTERM and SIGHUP raise :class:`~neurodeploy.errors.Terminated` (a KeyboardInterrupt)
    in the main thread, once; a second signal while cleaning up is ignored. Ctrl-C goes the same
    way: through Python's default handler, 3 of 8 interrupted `run`s aborted with std::terminate
    (pybind11::error_already_set) instead of exiting 130; through this one, 12 of 12 exited 130."""
    import signal
    from .errors import Terminated

    def handler(signum, frame):
        if STATE.get("terminating"):
            return
        if _inside_import(frame):
            # raising there leaves a module half-built, and under torch's C++ import code the
            # exception aborted the process (SIGABRT, seen in CI): deliver it again shortly
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        STATE["terminating"] = True
        STATE["signal"] = signum
        raise Terminated(signum)

    def swallowed(unraisable):
        """A signal that landed in a weakref callback or a __del__ (an import's module
        lock, a numba cache load) raised where Python prints and drops exceptions: the
        command ran on and wrote its outputs. Deliver it again; it lands in the command."""
        if isinstance(unraisable.exc_value, Terminated):
            STATE["terminating"] = False
            # from another thread, a moment later: sent from here, the handler would run
            # inside this hook, which drops exceptions too
            threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum)).start()
            return
        if STATE.get("terminating") and not STATE.get("debug"):
            # fallout of the interrupt: an object the signal stopped half-built fails in its
            # __del__ (llvmlite's PassBuilder: "no attribute '_as_parameter_'", seen in CI);
            # the user asked the command to stop, a traceback about it is noise
            return
        previous_hook(unraisable)

    previous = {}
    STATE["terminating"], STATE["signal"] = False, None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):   # not the main thread (an embedding program): leave them
            pass
    if previous:
        previous_hook, sys.unraisablehook = sys.unraisablehook, swallowed
        previous["unraisablehook"] = previous_hook
    return previous


def _inside_import(frame) -> bool:
    """The interrupted code runs under an import (frames link across C calls too)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _restore_handlers(previous: dict):
    """Put back what was there (the command runs in-process in tests and notebooks)."""
    import signal
    previous = dict(previous)
    if "unraisablehook" in previous:
        sys.unraisablehook = previous.pop("unraisablehook")
    for sig, h in previous.items():
        try:
            signal.signal(sig, h if h is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            pass


def _interrupt_of(e):
    """The KeyboardInterrupt (Ctrl-C or Terminated) that ``e`` was raised from, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return e
        e = e.__cause__ or e.__context__
    return None


def _exit_interrupted(e):
    import signal
    signum = getattr(e, "signum", signal.SIGINT)
    err.print("interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}")
    sys.exit(128 + signum)


def _usage_error(e):
    """click's (or typer's vendored click's) usage errors know how to print themselves."""
    return e if hasattr(e, "show") and hasattr(e, "exit_code") else None
