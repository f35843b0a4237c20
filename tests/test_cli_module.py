"""``neurodeploy export --module``, then run / validate / energy on the user's graph and data:
the command line a new user types, with the README's example network."""
from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest

pytest.importorskip("snntorch")

NET = textwrap.dedent('''
    import torch
    import snntorch as snn
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.lif1 = nn.Conv2d(1, 8, 3, padding=1), snn.Leaky(beta=0.9, init_hidden=True)
            self.pool = nn.AvgPool2d(2)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)
            self.fc, self.lif3 = nn.Linear(8 * 4 * 4, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True)

        def forward(self, x):
            s1 = self.pool(self.lif1(self.conv1(x)))
            s2 = self.lif2(self.bn2(self.conv2(s1))) + s1
            return self.lif3(self.fc(s2.flatten(1)))

    def make():
        torch.manual_seed(0)
        net = Net()
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.data *= 3
        return net

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.pool = nn.Linear(4, 4), nn.MaxPool1d(2)

        def forward(self, x):
            return self.pool(self.fc(x))
''')


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(NET)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((20, 1, 8, 8), dtype=np.float32) * 2)
    np.save(tmp_path / "y.npy", rng.integers(0, 10, 20))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_export_run_validate_energy_on_the_users_network(cli, user_dir):
    res = cli("export", "--module", "mynet.py:make", "--input-shape", "1,8,8", "-T", "6", "--input", "x.npy",
              "-o", "net.nir", "--json")
    assert res.code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["exactness"]["exact"] and rep["input_shape"] == [1, 8, 8]
    assert rep["checked_on"] == "20 samples of x.npy"
    assert (user_dir / "net.nir").exists()

    res = cli("run", "net.nir", "--input", "x.npy", "--labels", "y.npy", "--json")
    assert res.code == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["inputs"] == "20 samples of x.npy" and run["samples"] == 20 and run["timesteps"] == 6
    assert 0.0 <= run["accuracy"] <= 1.0 and "macro_f1" in run

    res = cli("validate", "net.nir", "--targets", "torch,onnx", "--input", "x.npy")
    assert res.code == 2 and "backend 'onnx' cannot run this graph: the graph names no source network" in res.stderr
    assert "running" not in res.stderr                                    # refused before anything ran
    res = cli("energy", "net.nir", "--targets", "cmos45nm", "--input", "x.npy", "--json")
    assert res.code == 0, res.stderr
    energy = json.loads(res.stdout)
    assert energy["inputs"] == "20 samples of x.npy" and energy["targets"][0]["energy_per_inference_j"] > 0


@pytest.mark.parametrize("args, message", [
    (["--module", "mynet.py:Missing", "--input-shape", "1,8,8"], "mynet.py has no 'Missing'; its modules: Broken, Net"),
    (["--module", "nofile.py:Net", "--input-shape", "1,8,8"], "nofile.py: no such file"),
    (["--module", "mynet.py:Broken", "--input-shape", "4"], r"cannot export pool \(MaxPool1d\)"),
    (["--module", "mynet.py:Net", "--input-shape", "1,5,5"], "does not run on a sample of shape"),
    (["--module", "mynet.py:Net", "--input-shape", "1,8,a"], "--input-shape '1,8,a'"),
    (["--module", "mynet.py:Net"], "--module needs --input-shape"),
    (["--module", "mynet.py:Net", "--input-shape", "1,8,8", "--weights", "other.pt"], "does not fit Net"),
])
def test_bad_module_exports_are_one_line_and_write_nothing(cli, user_dir, args, message):
    import torch
    torch.save({"fc.weight": torch.zeros(2, 2)}, user_dir / "other.pt")
    res = cli("export", *args, "-o", "out.nir")
    assert res.code == 2 and re.search(message, res.stderr), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (user_dir / "out.nir").exists()


def test_file_that_raises_on_import(cli, user_dir):
    (user_dir / "bad.py").write_text("raise RuntimeError('boom at import')\n")
    res = cli("export", "--module", "bad.py:Net", "--input-shape", "1,8,8")
    assert res.code == 2 and "bad.py does not import: RuntimeError: boom at import" in res.stderr
