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


def strongest_relations(likelihood, names, n=None, categories=None):
    """The learned coefficients as (column, parent, coefficient) rows, largest magnitude first.

    Between numeric columns, B_jk is in units of the two columns'
    standardised scales (log scale for log-normal and log-scale
    whole-number columns): 1.0 means one training standard deviation of the
    parent's residual moves the column's location by one of its own. A
    discrete parent is named ``column=category`` (``categories`` maps a
    categorical model column to its labels; a binary parent's category is
    1): its C is how far that category, against the training mix, moves
    the column's location in its standardised units, or a discrete
    column's logit (then named ``column=category`` too) in nats.
    """
    rows = []
    relations = getattr(likelihood, "relations", None)
    order = [int(c) for family, _ in likelihood.related_families() for c in family.columns.tolist()]
    if relations is not None:
        coefficients = relations.coefficients().detach().cpu().numpy()
        rows += [(str(names[order[j]]), str(names[order[k]]), float(coefficients[j, k]))
                 for j in range(len(order)) for k in range(j)]
    discrete = getattr(likelihood, "discrete", None)
    if discrete is not None:
        rows += _discrete_rows(discrete, order, names, categories or {})
    rows.sort(key=lambda row: -abs(row[2]))
    return rows if n is None else rows[:n]


def _discrete_rows(discrete, numeric_order, names, categories):
    def label(column, value):
        labels = categories.get(column)
        return f"{names[column]}={labels[value] if labels is not None else value}"

    # a parent's logits stand for its indicators' categories (a binary column's one logit for 1)
    indicators = [label(p["column"], v) for p in discrete.parents for v in p["values"]]
    targets = [str(names[c]) for c in numeric_order] + indicators
    coefficients = discrete.coefficients().detach().cpu().numpy()
    mask = discrete.mask.cpu().numpy()
    return [(targets[t], indicators[k], float(coefficients[t, k]))
            for t in range(len(targets)) for k in range(len(indicators)) if mask[t, k]]


class DiscreteParents(nn.Module):
    """Shifts by the categories of the binary and categorical columns: p(x_j | z, categories before j).

    Each discrete parent contributes indicator residuals r = [x = c] - f_c
    for its categories c (one indicator for a binary column), f_c the
    category's training frequency; a missing cell or a category never seen
    in training has r = 0. The targets, each related numeric column's
    location and each discrete column's logits, move by C r::

        target_t' = target_t(z) + sum_{parent blocks b before t} C_tb r_b

    Numeric columns see every discrete column (the discrete columns come
    first in the factorisation); a discrete column sees the discrete
    columns before it. The parents are observed values, so the shift is a
    constant in the decoder's parameters: every factor stays a proper
    density or mass, and the posterior search's derivatives are those of
    the shifted parameters. With one Gaussian column and one categorical
    parent this is the class-conditional Gaussian, which a decoder that is
    factorised given z can only state through the latent code.

    Parameters
    ----------
    parents : list of dict
        Per discrete parent in factorisation order: ``column`` (model
        column), ``support`` (valid codes 0..support-1: 2 for binary),
        ``values`` (the category of each indicator: [1] for binary),
        ``logits`` (positions of its logits in the decoder's output) and
        ``binary``.
    numeric_locations, numeric_spreads : sequence of int
        Positions of the related numeric columns' location and raw variance
        parameters (they see every parent).
    """

    def __init__(self, parents, numeric_locations, numeric_spreads):
        super().__init__()
        self.parents = [dict(parent) for parent in parents]
        columns, values, support, blocks = [], [], [], []
        for b, parent in enumerate(self.parents):
            columns += [parent["column"]] * len(parent["values"])
            values += parent["values"]
            support += [parent["support"]] * len(parent["values"])
            blocks += [b] * len(parent["values"])
        targets, limits = list(numeric_locations), [len(self.parents)] * len(numeric_locations)
        for b, parent in enumerate(self.parents):
            targets += parent["logits"]
            limits += [b] * len(parent["logits"])
        self.n_numeric = len(numeric_locations)
        self.register_buffer("parent_columns", torch.as_tensor(columns, dtype=torch.long))
        self.register_buffer("parent_values", torch.as_tensor(values, dtype=torch.float32))
        self.register_buffer("parent_support", torch.as_tensor(support, dtype=torch.float32))
        self.register_buffer("frequencies", torch.zeros(len(columns)))
        self.register_buffer("targets", torch.as_tensor(targets, dtype=torch.long))
        self.register_buffer("spreads", torch.as_tensor(list(numeric_spreads), dtype=torch.long))
        block = torch.as_tensor(blocks, dtype=torch.long)
        self.register_buffer("mask", (block.unsqueeze(0) < torch.as_tensor(limits).unsqueeze(1)).float())
        self.weight = nn.Parameter(torch.zeros(len(targets), len(columns)))

    def set_frequencies(self, x):
        """Each indicator's frequency among the training rows ``x`` (model matrix) where its parent is valid."""
        values = x.index_select(-1, self.parent_columns.to(x.device))
        usable = self._usable(values)
        hits = ((values == self.parent_values.to(values)) & usable).sum(0).to(self.frequencies)
        self.frequencies.copy_(hits / usable.sum(0).clamp_min(1).to(self.frequencies))

    def _usable(self, values):
        # NaN fails both comparisons; an unseen category has a code >= support
        return (values >= 0) & (values < self.parent_support.to(values)) & (values == values.round())

    def coefficients(self):
        """C, zero where a target may not see a parent."""
        return self.weight * self.mask

    def log_prior(self):
        """log N(C; 0, PRIOR_SCALE^2) summed over the coefficients, up to a constant."""
        return -0.5 * self.coefficients().square().sum() / PRIOR_SCALE**2

    def residuals(self, x):
        """The indicator residuals [x = c] - f_c of ``x``'s discrete cells (0 where missing or unseen)."""
        values = x.index_select(-1, self.parent_columns)
        indicator = (values == self.parent_values.to(values)).to(x.dtype)
        return torch.where(self._usable(values), indicator - self.frequencies.to(x.dtype), torch.zeros_like(indicator))

    def shifted(self, params, residuals):
        """``params`` with every target moved by C times the residuals (which broadcast against it)."""
        coefficients = self.coefficients().to(residuals.dtype)
        # Products summed in one fixed order, not a matmul: BLAS rounded this
        # (rows x indicators) @ (indicators x targets) product differently at 8
        # rows and at 16 or more (3.7e-9 on titanic), which moved a row's
        # per-column log p(x) by one float32 step with the rows scored beside it.
        # The residuals have no draws axis, so this is rows x 7 x 11 there.
        shift = residuals[..., :1] * coefficients[:, 0]
        for p in range(1, coefficients.shape[1]):
            shift = shift + residuals[..., p : p + 1] * coefficients[:, p]
        # The shift laid over all of params' positions (0 off the targets, which
        # are distinct), where it is K times smaller than params, then one
        # broadcast add: index_add into the expanded params copied them and then
        # added the targets' columns one by one (with the numeric relations'
        # shift, 38% of column_log_prob on titanic). x + 0 == x: the same floats.
        spread = shift.new_zeros(*shift.shape[:-1], params.shape[-1]).index_add_(-1, self.targets, shift)
        return params + spread

    def _expected_indicators(self, params):
        """Each parent's category probabilities given z, one parent after another.

        A discrete parent's logits move with the parents before it; they
        are moved by those parents' expected indicators (mean field): exact
        where the parents before are certain or unrelated, and the
        first-order answer elsewhere. For ``decode``'s E[x | z] only.
        """
        coefficients = self.coefficients().to(params.dtype)
        frequencies = self.frequencies.to(params.dtype)
        residual = params.new_zeros(params.shape[:-1] + frequencies.shape)
        parts, start, row = [], 0, self.n_numeric
        for parent in self.parents:
            width = len(parent["logits"])
            logits = params[..., parent["logits"]] + residual @ coefficients[row : row + width].T
            probs = torch.sigmoid(logits) if parent["binary"] else torch.softmax(logits, -1)
            residual[..., start : start + width] = probs - frequencies[start : start + width]
            parts.append(probs)
            start, row = start + width, row + width
        return parts, residual

    def expected_residuals(self, params):
        """E[r | z]: each parent's indicators replaced by their probabilities (see :meth:`_expected_indicators`)."""
        return self._expected_indicators(params)[1]

    def shift_variance(self, params):
        """Var of each numeric target's shift under the parents' laws given z (taken independent)."""
        coefficients = self.coefficients().to(params.dtype)[: self.n_numeric]
        total, start = 0.0, 0
        for probs in self._expected_indicators(params)[0]:
            block = coefficients[:, start : start + probs.shape[-1]]
            start += probs.shape[-1]
            # E[s^2] - E[s]^2; a binary parent's other value has indicator 0
            total = total + probs @ block.square().T - (probs @ block.T).square()
        return total

    def config(self):
        return {"parents": self.parents, "numeric_locations": self.targets[: self.n_numeric].tolist(),
                "numeric_spreads": self.spreads.tolist()}
