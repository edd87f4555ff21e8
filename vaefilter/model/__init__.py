"""The generative model: the network, the per-column likelihood families, training."""
