"""The Lava runtime: a Python 3.10 virtual environment this toolkit creates and manages.

lava-nc 0.10.0 / lava-dl 0.6.0 (the final releases; the repositories are archived)
declare Python >=3.10,<3.11, numpy<2 and torch<2.4, so they cannot live in the main
environment. We keep them in their own venv, created by plain
``pip install lava-dl==0.6.0 nir h5py`` (no patching, no --ignore-requires-python),
and talk to it through files only (the .nir graph in, .npy + JSON out; see
:mod:`neurodeploy.backends.lava.worker`).

Location: ``$NEURODEPLOY_LAVA_ENV`` or else ``~/.cache/neurodeploy/lava-runtime-py310``,
outside any work tree so that CI and later sessions reuse it (5.6 GB; a 2.9 GB
download, ~2 min). It is built in a temporary sibling folder and renamed into place
only when the install and an import check succeeded, so a half-made runtime never
sits at the real path. A marker file ``neurodeploy-runtime.json`` records the versions.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import NeurodeployError

ENV_VAR = "NEURODEPLOY_LAVA_ENV"
PYTHON_VAR = "NEURODEPLOY_PYTHON310"
MARKER = "neurodeploy-runtime.json"
REQUIREMENTS = ["lava-dl==0.6.0", "nir", "h5py"]
FIX = "run `neurodeploy setup lava` to create it"

_CHECK = ("import json, sys, importlib.metadata as m, lava, lava.lib.dl.slayer, nir, h5py, numpy;"
          "print(json.dumps({'python': sys.version.split()[0],"
          " 'lava-nc': m.version('lava-nc'), 'lava-dl': m.version('lava-dl'),"
          " 'nir': m.version('nir'), 'numpy': numpy.__version__}))")


def runtime_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "neurodeploy" / "lava-runtime-py310"


def runtime_python(path: Path | None = None) -> Path:
    return Path(path or runtime_path()) / "bin" / "python"


def runtime_status() -> dict:
    """Whether the runtime is usable, where, and with which versions (cheap: reads the marker)."""
    path = runtime_path()
    status = {"installed": False, "path": str(path), "python": None,
              "lava-nc": None, "lava-dl": None, "reason": None}
    py = runtime_python(path)
    marker = path / MARKER
    if not path.exists():
        status["reason"] = f"no Lava runtime at {path}"
    elif not py.exists():
        status["reason"] = f"{path} holds no Python interpreter (bin/python)"
    elif not marker.exists():
        status["reason"] = f"{path} has no {MARKER} (not made by `neurodeploy setup lava`, or incomplete)"
    else:
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError) as e:
            status["reason"] = f"{marker} is unreadable ({e})"
        else:
            status.update({k: info.get(k) for k in ("python", "lava-nc", "lava-dl", "nir", "numpy")})
            status["installed"] = True
    return status


def ensure_runtime(check_import: bool = False) -> Path:
    """Return the runtime's python, or raise one NeurodeployError line saying how to fix it."""
    status = runtime_status()
    if not status["installed"]:
        raise NeurodeployError(f"Lava runtime missing: {status['reason']}; {FIX}")
    py = runtime_python()
    if check_import:
        r = subprocess.run([str(py), "-c", _CHECK], capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise NeurodeployError(f"Lava runtime at {runtime_path()} is broken ({last}); "
                                   f"delete it and {FIX}")
    return py


def _python_version(exe: str) -> str | None:
    try:
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def find_python310() -> str:
    """$NEURODEPLOY_PYTHON310, python3.10 on PATH, or a pyenv 3.10 (3.10.13 first)."""
    candidates = []
    if os.environ.get(PYTHON_VAR):
        candidates.append(os.environ[PYTHON_VAR])
    if shutil.which("python3.10"):
        candidates.append(shutil.which("python3.10"))
    if shutil.which("pyenv"):
        versions = ["3.10.13"]
        r = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True)
        versions += sorted((v.strip() for v in r.stdout.split() if v.strip().startswith("3.10")),
                           reverse=True)
        for v in versions:
            r = subprocess.run(["pyenv", "prefix", v], capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip():
                candidates.append(str(Path(r.stdout.strip()) / "bin" / "python3.10"))
    for exe in candidates:
        if _python_version(exe) == "3.10":
            return exe
    raise NeurodeployError("no Python 3.10 interpreter found (Lava needs exactly 3.10): install one "
                           f"(e.g. `pyenv install 3.10.13`) or set {PYTHON_VAR}=/path/to/python3.10, "
                           "then run `neurodeploy setup lava`")


def install_runtime(log=print, force: bool = False) -> dict:
    """Create the runtime (idempotent). Returns runtime_status() afterwards."""
    path = runtime_path()
    if runtime_status()["installed"] and not force:
        log(f"Lava runtime already installed at {path}")
        return runtime_status()
    base = find_python310()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".part-", dir=path.parent))
    try:
        log(f"creating a Python 3.10 venv with {base} (in {tmp})")
        _run([base, "-m", "venv", str(tmp)], log)
        py = str(tmp / "bin" / "python")
        log(f"installing {' '.join(REQUIREMENTS)} (about 2.9 GB download, a few minutes)")
        _run([py, "-m", "pip", "install", "--upgrade", "pip"], log)
        _run([py, "-m", "pip", "install", *REQUIREMENTS], log)
        r = subprocess.run([py, "-c", _CHECK], capture_output=True, text=True)
        if r.returncode != 0:
            raise NeurodeployError("the Lava runtime installed but does not import: "
                                   + (r.stderr.strip().splitlines() or ["?"])[-1])
        info = json.loads(r.stdout.strip().splitlines()[-1])
        (tmp / MARKER).write_text(json.dumps({**info, "requirements": REQUIREMENTS}, indent=1))
        # venv scripts hard-code the folder they were made in; the worker only ever runs
        # bin/python (a symlink to the base interpreter) with -m, which is location-free.
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"Lava runtime ready at {path}: lava-nc {info['lava-nc']}, lava-dl {info['lava-dl']}")
    return runtime_status()


def _run(cmd, log) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]
        for line in tail:
            log(line)
        raise NeurodeployError(f"`{' '.join(cmd[:4])} ...` failed while creating the Lava runtime: "
                               + (tail[-1] if tail else f"exit {r.returncode}"))


__all__ = ["runtime_path", "runtime_python", "runtime_status", "ensure_runtime",
           "install_runtime", "find_python310"]
