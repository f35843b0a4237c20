"""Checks of what a user hands in, at the boundary, once: one line naming the option and
what it allows.

Every numeric option of the command line (counts, timesteps, batch size, epochs, dt,
thresholds, agreement) is checked here where it enters, before anything is read,
run or written; the library entry points that take the same values (``train``,
``Program.run``) call the same functions, so a script gets the same message as the
command. Graph parameters (tau, dt, thresholds, kernel sizes, finite weights) are
checked once when a graph is compiled, by :mod:`neurodeploy.ir.validate`.

Pure Python: no numpy, no torch.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Optional

from .errors import NeurodeployError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__ in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def at_least(option: str, value, minimum: int = 1) -> int:
    """An integer option (a count: samples, timesteps, batch size, epochs) that must be >= minimum."""
    if not _is_int(value) or int(value) < minimum:
        raise NeurodeployError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def optional_at_least(option: str, value, minimum: int = 1) -> Optional[int]:
    return None if value is None else at_least(option, value, minimum)


def positive(option: str, value) -> float:
    """A real option that must be finite and > 0 (dt, learning rate)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise NeurodeployError(f"{option} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise NeurodeployError(f"{option} must be a finite number > 0, got {value!r}")
    return v


def optional_positive(option: str, value) -> Optional[float]:
    return None if value is None else positive(option, value)


def fraction(option: str, value, low_open: bool = False, high_open: bool = False) -> float:
    """A real option in [0, 1] (agreement) or an open end of it ((0, 1) for a pruning ratio)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise NeurodeployError(f"{option} must be a number in {interval}, got {value!r}")
    return v


def choice(option: str, value, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise NeurodeployError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def int_list(option: str, text: Optional[str], allowed: Optional[Iterable[int]] = None) -> list:
    """A comma-separated list of integers ("4,6,8,9"), each in ``allowed`` when given."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise NeurodeployError(f"{option} must be a comma-separated list of integers, e.g. 4,6,8,9; "
                               f"got {text!r}") from None
    if not values:
        raise NeurodeployError(f"{option} must name at least one integer, got {text!r}")
    if allowed is not None:
        allowed = sorted(set(allowed))
        bad = [v for v in values if v not in allowed]
        if bad:
            raise NeurodeployError(f"{option}: {', '.join(map(str, bad))} not allowed; choose from "
                                   f"{', '.join(map(str, allowed))}")
    if len(set(values)) != len(values):
        raise NeurodeployError(f"{option} names a value twice: {text!r}")
    return values


def output_file(option: str, path) -> Optional[Path]:
    """A file the command will write: not an existing folder, and not inside a file."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise NeurodeployError(f"{option} {path} is a folder; give a file name (e.g. {path / 'out'})")
    return _under_a_folder(option, path)


def _under_a_folder(option: str, path: Path) -> Path:
    """The nearest existing parent of ``path`` must be a folder (it is created below it)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NeurodeployError(f"{option} {path}: {parent} is a file, not a folder")
            break
    return path


def output_folder(option: str, path) -> Optional[Path]:
    """A folder the command will write into: not an existing file."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NeurodeployError(f"{option} {path} is a file; give a folder")
    return _under_a_folder(option, path)


def run_arguments(timesteps, batch_size) -> None:
    """What every backend's ``Program.run`` checks before it starts (the command checks the
    same options first, with the same messages)."""
    optional_at_least("--timesteps", timesteps, 1)
    at_least("--batch-size", batch_size, 1)


def samples_in(n: int, what: str = "the input") -> int:
    if int(n) < 1:
        raise NeurodeployError(f"{what} holds no samples (N = 0); give at least one")
    return int(n)


TWINS = ("snn", "cnn")
DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("nir", "onnx", "netx")

# The command line's options, by their Python parameter name: (option as typed, rule).
# A command checks all of its options with one call, ``options(samples=samples, ...)``.
_RULES = {
    "samples": ("--samples", lambda o, v: at_least(o, v, 1)),
    "timesteps": ("--timesteps", lambda o, v: optional_at_least(o, v, 1)),
    "batch_size": ("--batch-size", lambda o, v: at_least(o, v, 1)),
    "lava_batch": ("--lava-batch", lambda o, v: at_least(o, v, 1)),
    "epochs": ("--epochs", lambda o, v: at_least(o, v, 1)),
    "limit": ("--limit", lambda o, v: optional_at_least(o, v, 1)),
    "seed": ("--seed", lambda o, v: at_least(o, v, 0)),
    "dt": ("--dt", optional_positive),
    "lr": ("--lr", positive),
    "min_agreement": ("--min-agreement", fraction),
    "channel_ratio": ("--channel-ratio", lambda o, v: None if v is None else fraction(o, v, True, True)),
    "device": ("--device", lambda o, v: choice(o, v, DEVICES)),
    "twin": ("--twin", lambda o, v: choice(o, v, TWINS)),
    "fmt": ("--format", lambda o, v: choice(o, v, FORMATS)),
    "save_output": ("--save-output", output_file),
    "save_counts": ("--save-counts", output_file),
    "output_file": ("--output", output_file),
    "output_folder": ("--output", output_folder),
}


def options(**values) -> None:
    """Check a command's options by name (see ``_RULES``); the first bad one is one line."""
    for name, value in values.items():
        option, rule = _RULES[name]
        rule(option, value)


__all__ = ["options", "at_least", "optional_at_least", "positive", "optional_positive", "fraction", "choice", "int_list",
           "output_file", "output_folder", "run_arguments", "samples_in", "TWINS", "DEVICES", "FORMATS"]
