"""Energy model: hand-computed energies on small counters, target files, graph identity."""
import math

import pytest

from neurodeploy.measure import energy
from neurodeploy.ir.counters import PopulationCounts, ProjectionCounts, RunCounters
from neurodeploy.errors import NeurodeployError

PJ = 1e-12


def small_counters(samples=1, timesteps=2, graph="abc123"):
    """Per sample: 10 MACs (first layer, real input), 1000 ACs, 4000 dense ops,
    one LIF population of 50 neurons: 100 updates, 30 with input, 10 spikes."""
    s = samples
    return RunCounters(
        samples=samples, timesteps=timesteps, graph_sha256=graph, backend="torch",
        projections={
            "conv1": ProjectionCounts("Conv2d", binary_input=False, effective_ops=10 * s,
                                      dense_ops=1000 * s, parameters=27),
            "conv2": ProjectionCounts("Conv2d", binary_input=True, effective_ops=1000 * s,
                                      dense_ops=3000 * s, parameters=300),
        },
        populations={
            "lif1": PopulationCounts("LIF", neurons=50, spikes=10 * s, neuron_updates=100 * s,
                                     input_events=30 * s),
        })


def test_cmos45nm_is_the_papers_formula():
    report = energy.price(small_counters(), "cmos45nm")
    assert math.isclose(report.joules, 0.9e-9 + 46e-12, rel_tol=1e-12)   # 1000 AC + 10 MAC
    assert report.component_totals() == pytest.approx({"ac": 0.9e-9, "mac": 46e-12})
    assert report.role_totals()["population"] == 0.0      # neuron updates not priced


def test_energy_is_per_sample():
    one = energy.price(small_counters(samples=1), "cmos45nm")
    four = energy.price(small_counters(samples=4), "cmos45nm")
    assert math.isclose(one.joules, four.joules, rel_tol=1e-12)


def test_loihi_hand_computed():
    r = energy.price(small_counters(), "loihi")
    # 1000 x 23.6 + 10 x 4.6 (host MAC) + 30 x 81 (active) + 70 x 52 (inactive) + 10 x 1.7
    expected = (23600 + 46 + 2430 + 3640 + 17) * PJ
    assert math.isclose(r.joules, expected, rel_tol=1e-12)
    lif = next(layer for layer in r.layers if layer.name == "lif1")
    assert lif.events["active_updates"] == 30
    assert lif.joules["spike"] == pytest.approx(17 * PJ)


def test_loihi_active_updates_at_least_spikes_at_most_updates():
    assert energy.active_updates(PopulationCounts("LIF", 5, spikes=4, neuron_updates=10,
                                                  input_events=0)) == 4
    assert energy.active_updates(PopulationCounts("LIF", 5, spikes=4, neuron_updates=10,
                                                  input_events=99)) == 10


def test_truenorth_and_spinnaker2_hand_computed():
    c = small_counters()
    assert math.isclose(energy.price(c, "truenorth").joules, (26000 + 46) * PJ, rel_tol=1e-12)
    # 1000 x 450 pJ + 10 x 4.6 pJ + 100 x 2.19 nJ
    assert math.isclose(energy.price(c, "spinnaker2").joules, (450000 + 46 + 219000) * PJ,
                        rel_tol=1e-12)


def test_gpu_estimate_and_measured():
    c = small_counters(samples=4)
    r = energy.price(c, "gpu")
    assert math.isclose(r.joules, 4000 * 20.9 * PJ, rel_tol=1e-12)   # dense ops, per sample
    m = energy.price(c, "gpu", measured_joules=2.0)
    assert m.joules == 0.5 and m.measured_j == 0.5
    assert math.isclose(m.estimated_j, r.joules)
    with pytest.raises(NeurodeployError, match="analytic"):
        energy.price(c, "cmos45nm", measured_joules=2.0)


def test_gpu_constant_matches_its_derivation():
    t = energy.load_target("gpu")
    derived = t.derivation["tdp"].value / t.derivation["peak_mac_rate"].value
    assert math.isclose(t.j("mac"), derived, rel_tol=0.01)
    assert "estimate" in t.energy["mac"].source.lower()


@pytest.mark.parametrize("name", [n for n in energy.target_names() if energy.load_target(n).rule != "none"])
def test_breakdown_sums_to_total(name):
    r = energy.price(small_counters(samples=3), name)
    assert math.isclose(sum(layer.total_j for layer in r.layers), r.estimated_j, rel_tol=1e-12)
    assert math.isclose(sum(r.component_totals().values()), r.estimated_j, rel_tol=1e-12)
    assert math.isclose(sum(r.role_totals().values()), r.estimated_j, rel_tol=1e-12)
    d = r.to_dict()
    assert d["joules_per_inference"] == r.joules and len(d["layers"]) == 3


def test_all_targets_load_with_units_and_sources():
    names = energy.target_names()
    assert {"cmos45nm", "loihi1", "loihi2", "truenorth", "spinnaker2", "gpu"} <= set(names)
    for name in names:
        t = energy.load_target(name)
        assert t.name == name and t.kind in energy.KINDS
        for c in list(t.energy.values()) + list(t.memory.values()):
            assert c.unit in energy.UNITS_J and c.source.strip()
    assert energy.load_target("loihi").backend == "lava" and energy.load_target("loihi").name == "loihi1"
    assert energy.load_target("cmos45nm").j("ac") == pytest.approx(0.9 * PJ)


GOOD = """
name = "mine"
description = "test target"
backend = "torch"
kind = "analytic"
rule = "ac_mac"
[energy]
ac = { value = 1.0, unit = "pJ", source = "test" }
mac = { value = 2.0, unit = "pJ", source = "test" }
"""


def write(tmp_path, text, name="mine"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_target_from_a_file(tmp_path):
    t = energy.load_target(write(tmp_path, GOOD))
    assert math.isclose(energy.price(small_counters(), t).joules, (1000 + 20) * PJ)


def test_missing_unit_names_file_and_key(tmp_path):
    path = write(tmp_path, GOOD.replace('mac = { value = 2.0, unit = "pJ",', 'mac = { value = 2.0,'))
    with pytest.raises(NeurodeployError) as e:
        energy.load_target(path)
    assert "mine.toml" in str(e.value) and "energy.mac" in str(e.value) and "unit" in str(e.value)


def test_missing_constant_names_file_and_key(tmp_path):
    path = write(tmp_path, GOOD.replace('mac = { value = 2.0, unit = "pJ", source = "test" }', ""))
    with pytest.raises(NeurodeployError, match=r"mine\.toml.*energy\.mac"):
        energy.load_target(path)


@pytest.mark.parametrize("old,new,msg", [
    ('unit = "pJ", source = "test" }\nmac', 'unit = "pW", source = "test" }\nmac', "energy unit"),
    ('source = "test" }\nmac', 'source = "" }\nmac', "source"),
    ('kind = "analytic"', 'kind = "guess"', "kind"),
    ('rule = "ac_mac"', 'rule = "magic"', "rule"),
    ('backend = "torch"\n', "", "backend"),
    ('name = "mine"', 'name = "other"', "name"),
])
def test_bad_target_files(tmp_path, old, new, msg):
    assert old in GOOD
    with pytest.raises(NeurodeployError, match=msg):
        energy.load_target(write(tmp_path, GOOD.replace(old, new)))


def test_incomplete_memory_table(tmp_path):
    text = GOOD + '[memory]\nweight_read = { value = 5.0, unit = "pJ", source = "test" }\n'
    with pytest.raises(NeurodeployError, match="memory.potential_read"):
        energy.load_target(write(tmp_path, text))


def test_unknown_target_lists_valid_ones():
    with pytest.raises(NeurodeployError) as e:
        energy.load_target("loihi3")
    for name in ("cmos45nm", "loihi", "truenorth", "spinnaker2", "gpu"):
        assert name in str(e.value)


def test_targets_dir_falls_back_to_repo_folder():
    assert "cmos45nm" in energy.target_names()
    assert (energy.targets_dir() / "cmos45nm.toml").is_file()


def test_graph_hash_mismatch_refused():
    c = small_counters(graph="a" * 64)
    energy.check_graph(c, "a" * 64)
    assert energy.price(c, "cmos45nm", graph_sha256="a" * 64).graph_sha256 == "a" * 64
    with pytest.raises(NeurodeployError, match="re-run"):
        energy.price(c, "cmos45nm", graph_sha256="b" * 64)
    with pytest.raises(NeurodeployError, match="no graph_sha256"):
        energy.check_graph(small_counters(graph=None), "a" * 64)


def test_empty_run_refused():
    with pytest.raises(NeurodeployError, match="samples"):
        energy.price(RunCounters(samples=0, timesteps=4), "cmos45nm")


def test_cnn_energy_and_ratio():
    assert math.isclose(energy.cnn_energy(1e6), 4.6e-6)             # 1 M MAC x 4.6 pJ
    assert math.isclose(energy.cnn_energy(1e6, "gpu"), 20.9e-6)
    assert energy.cnn_twin_macs(small_counters(samples=3, timesteps=2)) == 2000
    assert math.isclose(energy.energy_ratio(4.6e-6, 0.946e-9), 4862.579, rel_tol=1e-6)
    with pytest.raises(NeurodeployError, match="cmos45nm"):
        energy.cnn_energy(1e6, "loihi")
    with pytest.raises(NeurodeployError):
        energy.energy_ratio(1.0, 0.0)


def test_memory_aware_hand_computed():
    m = energy.memory_aware(small_counters(samples=2, timesteps=2))
    # SNN: ops 946 pJ; weight reads 1010 x 5; potentials 100 x (5 + 5); spike reads 10 x 5
    assert m.snn == pytest.approx({"ops": 946 * PJ, "weight_reads": 5050 * PJ,
                                   "potentials": 1000 * PJ, "input_reads": 50 * PJ,
                                   "total": 7046 * PJ})
    # CNN twin: 2000 MACs x 4.6 pJ; 2000 weight reads x 5; 50 activations x (5 + 5)
    assert m.cnn == pytest.approx({"ops": 9200 * PJ, "weight_reads": 10000 * PJ,
                                   "input_reads": 250 * PJ, "output_writes": 250 * PJ,
                                   "total": 19700 * PJ})
    assert m.ratio_ops_only == pytest.approx(9200 / 946)
    assert m.ratio_with_memory == pytest.approx(19700 / 7046)
    assert m.ratio_with_memory < m.ratio_ops_only     # memory shrinks the SNN advantage
    given = energy.memory_aware(small_counters(), cnn_macs=1e3)
    assert given.cnn["ops"] == pytest.approx(4600 * PJ)
    with pytest.raises(NeurodeployError, match="memory"):
        energy.memory_aware(small_counters(), "loihi")


def test_counters_round_trip_through_dict():
    c = small_counters()
    again = RunCounters.from_dict(c.to_dict())
    assert energy.price(again, "loihi").joules == energy.price(c, "loihi").joules


def test_backend_name_given_as_target_gets_a_hint_and_speck_is_not_priced():
    with pytest.raises(NeurodeployError, match="'lava' is a backend .* hardware targets are: .*loihi2"):
        energy.load_target("lava")
    with pytest.raises(NeurodeployError, match="no per-event energy"):
        energy.price(small_counters(), "speck")
