"""Per-column likelihood families for the decoder p(x | z).

Every family covers a set of columns of the model matrix, says how many decoder
outputs it needs, how its columns are fed to the encoder, and returns
``log p(x_j | z)`` per column in the column's *original* units (nats), so the
sum over columns is a proper log-density/log-mass of the row as the user gave it.

The families are ``torch.nn.Module`` objects that hold their constants
(standardisation, column positions) as buffers: they move with the network
between devices and are saved in its ``state_dict``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# A value a family cannot produce (2 in a binary column, -0.1 in a [0, 1]
# column) has probability zero. We keep scores finite so that a gate can rank
# and explain the row: the column contributes this many nats instead of -inf.
OUT_OF_SUPPORT_LOG_PROB = -1000.0

_LOG_2PI = math.log(2.0 * math.pi)


class ColumnFamily(nn.Module):
    """Base class: a likelihood family over a subset of the model's columns.

    Parameters
    ----------
    columns : sequence of int
        Positions of the family's columns in the model matrix.
    """

    #: name used in configs and model files
    kind = "abstract"
    #: decoder outputs per column
    params_per_column = 1

    def __init__(self, columns):
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(list(columns), dtype=torch.long))

    @property
    def n_columns(self):
        return int(self.columns.numel())

    @property
    def n_params(self):
        return self.params_per_column * self.n_columns

    def select(self, x):
        """The family's columns of a model matrix ``x`` of shape (..., n_features)."""
        return x.index_select(-1, self.columns)

    def network_input(self, x_cols):
        """Encoder features for the family's columns (shape (..., n_columns))."""
        return x_cols

    def log_prob(self, params, x_cols):
        """Per-column log p(x_j | z), shape broadcast of params and x, (..., n_columns)."""
        raise NotImplementedError

    def mean(self, params):
        """E[x_j | z] in original units."""
        raise NotImplementedError

    def sample(self, params, generator=None):
        """A draw x_j ~ p(x_j | z) in original units."""
        raise NotImplementedError

    def config(self):
        """JSON-able constructor arguments other than tensors held as buffers."""
        return {"kind": self.kind, "columns": self.columns.tolist()}


class GaussianColumns(ColumnFamily):
    """Gaussian columns, modelled on standardised values.

    The decoder predicts a mean and a variance per column on the standardised
    scale; ``variance = min_variance + softplus(raw)`` keeps the density
    bounded. ``log_prob`` adds the Jacobian ``-log(scale)`` so the result is a
    density of the original value.
    """

    kind = "gaussian"
    params_per_column = 2

    def __init__(self, columns, loc, scale, min_variance=1e-3):
        super().__init__(columns)
        self.register_buffer("loc", torch.as_tensor(np.asarray(loc), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))
        self.min_variance = float(min_variance)

    def network_input(self, x_cols):
        return (x_cols - self.loc) / self.scale

    def _mean_and_variance(self, params):
        mean, raw_variance = params.chunk(2, dim=-1)
        return mean, self.min_variance + F.softplus(raw_variance)

    def log_prob(self, params, x_cols):
        mean, variance = self._mean_and_variance(params)
        standardised = (x_cols - self.loc) / self.scale
        return -0.5 * (_LOG_2PI + variance.log() + (standardised - mean) ** 2 / variance) - self.scale.log()

    def mean(self, params):
        mean, _ = self._mean_and_variance(params)
        return self.loc + self.scale * mean

    def sample(self, params, generator=None):
        mean, variance = self._mean_and_variance(params)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.loc + self.scale * (mean + variance.sqrt() * noise)

    def config(self):
        return {**super().config(), "min_variance": self.min_variance}


class BernoulliColumns(ColumnFamily):
    """Binary columns with values in {0, 1}: a Bernoulli mass per column."""

    kind = "bernoulli"

    def log_prob(self, params, x_cols):
        in_support = (x_cols == 0) | (x_cols == 1)
        target = torch.where(in_support, x_cols, torch.zeros_like(x_cols))
        target, logits = torch.broadcast_tensors(target, params)
        log_prob = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return torch.where(in_support, log_prob, torch.full_like(log_prob, OUT_OF_SUPPORT_LOG_PROB))

    def mean(self, params):
        return torch.sigmoid(params)

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class ContinuousBernoulliColumns(ColumnFamily):
    """Columns with values in [0, 1] that are not binary (e.g. scaled pixels).

    The continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) is the
    normalised density behind the usual "binary cross-entropy on grey values";
    without its normaliser the score would not be a likelihood.
    """

    kind = "continuous_bernoulli"

    def _distribution(self, params):
        return torch.distributions.ContinuousBernoulli(logits=params, validate_args=False)

    def log_prob(self, params, x_cols):
        in_support = (x_cols >= 0) & (x_cols <= 1)
        target = torch.where(in_support, x_cols, torch.full_like(x_cols, 0.5))
        target, params = torch.broadcast_tensors(target, params)
        log_prob = self._distribution(params).log_prob(target)
        in_support = in_support.expand_as(log_prob)
        return torch.where(in_support, log_prob, torch.full_like(log_prob, OUT_OF_SUPPORT_LOG_PROB))

    def mean(self, params):
        return self._distribution(params).mean

    def sample(self, params, generator=None):
        # ContinuousBernoulli.sample has no generator argument: invert its CDF.
        uniform = torch.rand(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        return self._distribution(params).icdf(uniform)


FAMILIES = {cls.kind: cls for cls in (GaussianColumns, BernoulliColumns, ContinuousBernoulliColumns)}


class FactorizedLikelihood(nn.Module):
    """p(x | z) = prod_j p(x_j | z), assembled from column families.

    Parameters
    ----------
    families : list of ColumnFamily
        Disjoint families that together cover every column.
    n_features : int
        Width of the model matrix.
    """

    def __init__(self, families, n_features):
        super().__init__()
        self.families = nn.ModuleList(families)
        self.n_features = int(n_features)
        covered = sorted(c for family in families for c in family.columns.tolist())
        if covered != list(range(self.n_features)):
            raise ValueError("column families must cover every column exactly once")

    @property
    def n_params(self):
        return sum(family.n_params for family in self.families)

    @property
    def input_width(self):
        return sum(family.n_columns for family in self.families)

    def _split_params(self, params):
        return params.split([family.n_params for family in self.families], dim=-1)

    def network_input(self, x):
        return torch.cat([family.network_input(family.select(x)) for family in self.families], dim=-1)

    def column_log_prob(self, params, x):
        """log p(x_j | z) per original column, shape (..., n_features)."""
        shape = torch.broadcast_shapes(params.shape[:-1], x.shape[:-1]) + (self.n_features,)
        out = params.new_empty(shape)
        for family, family_params in zip(self.families, self._split_params(params)):
            out[..., family.columns] = family.log_prob(family_params, family.select(x))
        return out

    def log_prob(self, params, x):
        """log p(x | z) summed over columns, shape (...)."""
        total = None
        for family, family_params in zip(self.families, self._split_params(params)):
            part = family.log_prob(family_params, family.select(x)).sum(-1)
            total = part if total is None else total + part
        return total

    def _assemble(self, params, method, **kwargs):
        parts = self._split_params(params)
        out = params.new_empty(params.shape[:-1] + (self.n_features,))
        for family, family_params in zip(self.families, parts):
            out[..., family.columns] = getattr(family, method)(family_params, **kwargs)
        return out

    def mean(self, params):
        return self._assemble(params, "mean")

    def sample(self, params, generator=None):
        return self._assemble(params, "sample", generator=generator)

    def config(self):
        return {"n_features": self.n_features, "families": [family.config() for family in self.families]}

    @classmethod
    def from_config(cls, config):
        """Rebuild with placeholder buffers; ``load_state_dict`` fills them."""
        families = []
        for spec in config["families"]:
            spec = dict(spec)
            family_cls = FAMILIES[spec.pop("kind")]
            if family_cls is GaussianColumns:
                n = len(spec["columns"])
                spec.setdefault("loc", np.zeros(n))
                spec.setdefault("scale", np.ones(n))
            families.append(family_cls(**spec))
        return cls(families, config["n_features"])


def _is_binary(column):
    return bool(np.all((column == 0) | (column == 1)))


def build_likelihood(X, likelihood, min_variance):
    """Choose a family for every column of the training matrix ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite training data.
    likelihood : {'auto', 'gaussian', 'bernoulli'}
        'auto' gives Bernoulli to columns that are binary in ``X`` and
        Gaussian to the rest; 'bernoulli' needs every value in [0, 1] and
        uses the continuous Bernoulli for columns that are not binary.
    min_variance : float
        Variance floor of Gaussian columns, on the standardised scale.
    """
    binary = [j for j in range(X.shape[1]) if _is_binary(X[:, j])]
    if likelihood == "gaussian":
        gaussian, bernoulli, continuous = list(range(X.shape[1])), [], []
    elif likelihood == "auto":
        gaussian = [j for j in range(X.shape[1]) if j not in set(binary)]
        bernoulli, continuous = binary, []
    else:
        outside = np.flatnonzero(((X < 0) | (X > 1)).any(axis=0))
        if outside.size:
            raise ValueError(
                f"likelihood='bernoulli' needs values in [0, 1]; column {int(outside[0])} has values "
                f"outside it (min {X[:, outside[0]].min():g}, max {X[:, outside[0]].max():g})"
            )
        gaussian, bernoulli = [], binary
        continuous = [j for j in range(X.shape[1]) if j not in set(binary)]

    families = []
    if gaussian:
        loc = X[:, gaussian].mean(axis=0)
        scale = X[:, gaussian].std(axis=0)
        # a constant column keeps unit scale (as in sklearn's StandardScaler)
        scale = np.where(scale < 10 * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(loc)), 1.0, scale)
        families.append(GaussianColumns(gaussian, loc, scale, min_variance))
    if bernoulli:
        families.append(BernoulliColumns(bernoulli))
    if continuous:
        families.append(ContinuousBernoulliColumns(continuous))
    return FactorizedLikelihood(families, X.shape[1])
