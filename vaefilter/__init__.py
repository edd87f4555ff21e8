"""vaefilter: a variational autoencoder as a learned data-validation gate."""

from .estimator import VAEOutlierDetector

__version__ = "0.1.0"
__all__ = ["VAEOutlierDetector", "__version__"]
