"""GPU energy measured, not estimated: NVML's energy counter read around a run.

``nvmlDeviceGetTotalEnergyConsumption`` (Volta and newer) counts the board's energy in
millijoules since the driver loaded. Around a run this gives the energy the GPU drew; the
idle power, read over ``idle_seconds`` just before, times the run's duration is subtracted,
so what is left is the energy the inference cost above an idle board (both are reported).
Needs ``nvidia-ml-py`` (``pip install nvidia-ml-py``) and a CUDA device; ``energy --targets
gpu --device cuda`` uses it, and the spec-sheet estimate stays beside the measurement.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from ..errors import NeurodeployError


@dataclass
class GpuEnergy:
    total_j: float          # what the board drew during the run
    idle_w: float           # its idle power just before
    seconds: float          # the run's duration (synchronised)
    above_idle_j: float     # total - idle power x duration: the run's own energy

    def to_dict(self) -> dict:
        return asdict(self)


def _nvml():
    try:
        import pynvml
    except ImportError:
        raise NeurodeployError("measuring GPU energy needs NVML's Python binding: pip install nvidia-ml-py") from None
    return pynvml


def measure(run, device_index: int = 0, idle_seconds: float = 1.0, synchronize=None):
    """(run()'s result, GpuEnergy): NVML's energy counter around ``run``, idle subtracted."""
    nvml = _nvml()
    try:
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(int(device_index))
        energy_mj = lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        if synchronize:
            synchronize()
        e0, t0 = energy_mj(), time.perf_counter()
        time.sleep(idle_seconds)
        e1, t1 = energy_mj(), time.perf_counter()
        result = run()
        if synchronize:
            synchronize()
        e2, t2 = energy_mj(), time.perf_counter()
    except Exception as e:  # noqa: BLE001 - NVMLError and its many subclasses
        if isinstance(e, NeurodeployError):
            raise
        raise NeurodeployError(f"NVML could not read the GPU's energy counter ({type(e).__name__}: {e})") from None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down after a failed init
            pass
    idle_w = (e1 - e0) / 1000.0 / max(t1 - t0, 1e-9)
    total = (e2 - e1) / 1000.0
    seconds = t2 - t1
    return result, GpuEnergy(total, idle_w, seconds, max(total - idle_w * seconds, 0.0))
