"""meshops: install, tune and upgrade Istio, and move live traffic between clusters."""

__version__ = "0.1.0"
