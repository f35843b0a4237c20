"""neurodeploy: spiking CNNs -> NIR -> Lava/Loihi and a PyTorch reference backend, with measured energy."""

__version__ = "0.1.0"
