"""host_memory: glibc keeps freed blocks for reuse (what makes T x B tensors cheap on CPU)."""
from __future__ import annotations

import platform

import pytest

from neurodeploy.kernels import host_memory


def test_switch_is_off_when_asked(monkeypatch):
    monkeypatch.setattr(host_memory, "_done", False)
    monkeypatch.setenv("NEURODEPLOY_KEEP_FREED_MEMORY", "0")
    assert host_memory.reuse_freed_memory() is False
    assert host_memory._done is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_switch_takes_effect_on_glibc_once(monkeypatch):
    monkeypatch.setattr(host_memory, "_done", False)
    monkeypatch.delenv("NEURODEPLOY_KEEP_FREED_MEMORY", raising=False)
    assert host_memory.reuse_freed_memory() is True
    assert host_memory.reuse_freed_memory() is True      # idempotent
