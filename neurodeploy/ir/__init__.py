"""The graph core: what a NIR graph means here, with no torch (the Lava runtime imports it).

* :mod:`.nodes`       the node kinds (populations, projections, wiring), once
* :mod:`.topology`    neighbours, nested graphs, order and cycles, chains, shapes
* :mod:`.neurons`     the discretisation of every neuron type, with its equations
* :mod:`.conventions` dt, reset, encoding and provenance, stored in the graph's metadata
* :mod:`.counters`    what a run counts (synaptic operations, neuron updates, spikes)
* :mod:`.io`          reading and writing .nir files, with one-line errors
"""
