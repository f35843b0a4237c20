"""neurodeploy: spiking CNNs -> NIR -> Lava/Loihi and a PyTorch reference backend, with measured energy."""
from .host_threads import passive_openmp_workers

passive_openmp_workers()      # before anything loads torch (see host_threads.py)

__version__ = "0.1.0"
