"""Linear relations between numeric columns: p(x | z) = prod_j p(x_j | z, x_<j).

A decoder that is factorised given z must put every exact relation between
columns (a width that is max - min, a log-area twice a log-radius plus a
constant) into the latent code, and pays for its precision in KL; a
full-covariance Gaussian mixture states it in one covariance entry. On
cardiotocography (13 whole-number columns, three of which are max, min and
their difference) the factorised VAE scored -27 nats/row held out against
+12 for a 4-component full-covariance GaussianMixture, and -20 for the
same mixture with diagonal covariances: the gap was relations, not
marginals.

The relations shift the location of each related column (Gaussian,
log-normal and whole-number columns, on their standardised scale) by a
linear function of the residuals of the columns before it::

    location_j' = location_j(z) + sum_{k<j} B_jk (u_k - location_k(z))

(Student-t columns likewise), where u_k is column k's value on that family's standardised scale (clipped
to +-INPUT_CLIP, and residual 0 where the cell is missing, zero in a
hurdle column, or out of support). Every factor is still a proper density
or mass of x_j given z and the columns before it, so the product is a
proper likelihood of the row: with Gaussian columns it is a Gaussian with
covariance (I - B)^-1 D (I - B)^-T given z, so the model contains the
full-covariance Gaussian. B is strictly lower triangular, starts at zero
(the factorised model) and is trained with the rest of the network.
"""

from __future__ import annotations

import torch
from torch import nn

#: standard deviation of the Gaussian prior on each coefficient (training is MAP).
#: Chosen by held-out log-likelihood on choose_defaults' tuning tables
#: (``python benchmarks/choose_defaults.py --relations``): 0.3 was best on the
#: three wide ones (star98 +2.0, fertility +6.4, macrodata +0.9 nats/row over
#: no prior; 1 and 0.1 in between) and tied elsewhere (within 0.06).
PRIOR_SCALE = 0.3

#: families whose first parameter block is a location on a standardised scale
RELATED_KINDS = ("gaussian", "student_t", "positive", "whole_number")


class LinearRelations(nn.Module):
    """The strictly lower-triangular coefficients B and where the related columns sit.

    Parameters
    ----------
    locations : sequence of int
        Position of each related column's location parameter in the
        decoder's output, in the order of the factorisation.
    spreads : sequence of int
        Position of each related column's raw variance parameter.
    """

    def __init__(self, locations, spreads):
        super().__init__()
        m = len(locations)
        self.register_buffer("locations", torch.as_tensor(list(locations), dtype=torch.long))
        self.register_buffer("spreads", torch.as_tensor(list(spreads), dtype=torch.long))
        self.register_buffer("mask", torch.ones(m, m).tril(-1))
        self.weight = nn.Parameter(torch.zeros(m, m))

    @property
    def n_related(self):
        return int(self.locations.numel())

    def log_prior(self):
        """log N(B; 0, PRIOR_SCALE^2) summed over the coefficients, up to a constant."""
        return -0.5 * self.coefficients().square().sum() / PRIOR_SCALE**2

    def coefficients(self):
        """B, strictly lower triangular."""
        return self.weight * self.mask

    def shifted(self, params, values, usable):
        """``params`` with each related location moved by B times the residuals before it.

        ``values`` and ``usable`` (the related columns on their standardised
        scales, and where a residual exists) broadcast against ``params``.
        """
        location = params.index_select(-1, self.locations)
        residual = torch.where(usable, values - location, torch.zeros_like(location))
        shift = residual @ self.coefficients().T
        if shift.shape[:-1] != params.shape[:-1]:
            params = params.expand(*shift.shape[:-1], params.shape[-1])
        return params.index_add(-1, self.locations, shift)

    def jacobian_times(self, vectors, usable):
        """J v, J the Jacobian of :meth:`shifted` in ``params`` (linear in them)."""
        along = vectors.index_select(-1, self.locations) * usable
        return vectors.index_add(-1, self.locations, -(along @ self.coefficients().T))

    def jacobian_transpose_times(self, gradient, usable):
        """J^T g: a gradient in the shifted parameters taken back to the decoder's."""
        along = gradient.index_select(-1, self.locations) @ self.coefficients()
        return gradient.index_add(-1, self.locations, -(along * usable))

    def marginal_spread(self, variance):
        """diag((I - B)^-1 D (I - B)^-T): each related column's variance given z alone."""
        eye = torch.eye(self.n_related, device=variance.device, dtype=variance.dtype)
        inverse = torch.linalg.solve_triangular(eye - self.coefficients().to(variance.dtype), eye, upper=False)
        return variance @ inverse.square().T

    def config(self):
        return {"locations": self.locations.tolist(), "spreads": self.spreads.tolist()}


def strongest_relations(likelihood, names, n=None):
    """The learned coefficients B_jk as (column, parent, coefficient) rows, largest |B| first.

    A coefficient is in units of the two columns' standardised scales (log
    scale for log-normal and log-scale whole-number columns): 1.0 means one
    training standard deviation of the parent's residual moves the column's
    location by one of its own.
    """
    relations = getattr(likelihood, "relations", None)
    if relations is None:
        return []
    order = [int(c) for family, _ in likelihood.related_families() for c in family.columns.tolist()]
    coefficients = relations.coefficients().detach().cpu().numpy()
    rows = [(str(names[order[j]]), str(names[order[k]]), float(coefficients[j, k]))
            for j in range(len(order)) for k in range(j)]
    rows.sort(key=lambda row: -abs(row[2]))
    return rows if n is None else rows[:n]
