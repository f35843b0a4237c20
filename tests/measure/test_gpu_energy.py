"""NVML's energy counter around a run, idle power subtracted (a scripted NVML: no GPU here)."""
from __future__ import annotations

import sys
import types

import pytest

from neurodeploy.errors import NeurodeployError
from neurodeploy.measure import gpu_energy


def fake_nvml(monkeypatch, readings_mj, fail=False):
    readings = iter(readings_mj)
    mod = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: ("gpu", i),
        nvmlDeviceGetTotalEnergyConsumption=(lambda h: (_ for _ in ()).throw(RuntimeError("not supported")))
        if fail else (lambda h: next(readings)))
    monkeypatch.setitem(sys.modules, "pynvml", mod)


def test_energy_above_idle(monkeypatch):
    fake_nvml(monkeypatch, [1_000.0, 1_050.0, 1_350.0])           # mJ: idle 50 mJ over the idle window
    clock = iter([0.0, 1.0, 3.0])                                 # idle 1 s, then the run takes 2 s
    monkeypatch.setattr(gpu_energy.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(gpu_energy.time, "sleep", lambda s: None)
    result, e = gpu_energy.measure(lambda: "ran")
    assert result == "ran"
    assert e.idle_w == pytest.approx(0.05) and e.total_j == pytest.approx(0.3) and e.seconds == pytest.approx(2.0)
    assert e.above_idle_j == pytest.approx(0.3 - 0.05 * 2.0)


def test_nvml_errors_are_one_line(monkeypatch):
    fake_nvml(monkeypatch, [], fail=True)
    monkeypatch.setattr(gpu_energy.time, "sleep", lambda s: None)
    with pytest.raises(NeurodeployError, match="NVML could not read the GPU's energy counter"):
        gpu_energy.measure(lambda: None)


def test_missing_binding_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NeurodeployError, match="pip install nvidia-ml-py"):
        gpu_energy.measure(lambda: None)
