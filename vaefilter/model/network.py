"""The torch model: an MLP encoder q(z|x), an MLP decoder p(x|z) and the prior.

The network sees model matrices (float tensors), never pandas; how each
column is fed in and scored is the business of its likelihood family.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._torch import LOG_2PI, reparameterize
from .fused_mlp import mlp_forward
from .likelihoods import FactorizedLikelihood


# exp(log_var) is squared inside the density of q: keep it where float32 is exact
# enough that a runaway encoder cannot produce inf or a zero-width proposal.
LOG_VAR_MIN, LOG_VAR_MAX = -14.0, 8.0


def _mlp(sizes):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class VAENetwork(nn.Module):
    """Encoder, decoder and likelihood of a VAE over a model matrix.

    Parameters
    ----------
    likelihood : FactorizedLikelihood
        Column families of p(x|z); its ``n_params`` sets the decoder's width.
    latent_dim : int
        Dimension of z.
    hidden_layer_sizes : sequence of int
        Hidden widths of the encoder; the decoder mirrors them. Empty gives
        linear maps (a probabilistic-PCA-like model).
    """

    def __init__(self, likelihood: FactorizedLikelihood, latent_dim, hidden_layer_sizes):
        super().__init__()
        self.likelihood = likelihood
        self.latent_dim = int(latent_dim)
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.encoder = _mlp([likelihood.input_width, *self.hidden_layer_sizes, 2 * self.latent_dim])
        self.decoder = _mlp([self.latent_dim, *reversed(self.hidden_layer_sizes), likelihood.n_params])

    def encode(self, x):
        """Mean and log-variance of q(z|x), each of shape (n, latent_dim)."""
        mean, log_var = self.encoder(self.likelihood.network_input(x)).chunk(2, dim=-1)
        return mean, log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    @property
    def widest_hidden_layer(self):
        """Width of the widest hidden decoder activation (sizes the scoring passes).

        The output layer is left out: it is read once by the likelihood, while
        each hidden activation also passes through bias and SiLU.
        """
        return max((self.latent_dim, *self.hidden_layer_sizes))

    def decode(self, z):
        """Parameters of p(x|z) for latent points of shape (..., latent_dim)."""
        return mlp_forward(self.decoder, z)

    def negative_elbo(self, x, noise):
        """-ELBO per row (nats): reconstruction with one reparameterised draw, analytic KL.

        ``noise`` is standard normal of shape (n, latent_dim): passing it in
        keeps the draw under the caller's generator.
        """
        mean, log_var = self.encode(x)
        z = reparameterize(mean, log_var, noise)
        reconstruction = self.likelihood.log_prob(self.decode(z), x)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)
        return kl - reconstruction

    def negative_bound(self, x, noise):
        """The training loss per row (nats): -ELBO for ``noise`` of shape (n, latent_dim), else the
        negative K-sample importance-weighted bound (IWAE; Burda et al., 2016) for (n, K, latent_dim).

        The K-sample bound lies between the ELBO and log p(x) and tightens
        with K, so a decoder trained on it is fitted nearer to the maximum
        likelihood; its encoder is left wider (mass-covering) than the ELBO's.
        """
        if noise.dim() == 2:
            return self.negative_elbo(x, noise)
        mean, log_var = self.encode(x)
        z = reparameterize(mean, log_var, noise)
        # (z - mean) / std is exactly the noise, so q's density needs no division
        log_q = self.log_prior(noise) - 0.5 * log_var.sum(-1, keepdim=True)
        log_w = self.likelihood.log_prob(self.decode(z), x.unsqueeze(1)) + self.log_prior(z) - log_q
        return math.log(noise.shape[1]) - torch.logsumexp(log_w, dim=1)

    def expected_rows(self, z):
        """E[x | z] per column for latent points ``z`` of shape (n, latent_dim), original units."""
        with torch.inference_mode():
            return self.likelihood.mean(self.decode(z))

    def generate(self, n_rows, seed):
        """``n_rows`` rows x ~ p(x | z), z ~ N(0, I), reproducible for a seed."""
        device = next(self.parameters()).device
        generator = torch.Generator(device=device).manual_seed(int(seed))
        with torch.inference_mode():
            z = torch.randn(int(n_rows), self.latent_dim, generator=generator, device=device)
            return self.likelihood.sample(self.decode(z), generator=generator)

    @staticmethod
    def log_prior(z):
        """log N(z; 0, I), summed over the last axis."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)

    def config(self):
        """JSON-able description that, with a state dict, rebuilds the network."""
        return {
            "latent_dim": self.latent_dim,
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "likelihood": self.likelihood.config(),
        }

    @classmethod
    def from_config(cls, config):
        likelihood = FactorizedLikelihood.from_config(config["likelihood"])
        return cls(likelihood, config["latent_dim"], config["hidden_layer_sizes"])
