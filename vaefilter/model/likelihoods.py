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
from scipy import stats
from torch.nn import functional as F

from .._precision import float32_resolves
from .._torch import LOG_2PI, may_be_true
from .relations import RELATED_KINDS, DiscreteParents, LinearRelations

# A value a family cannot produce (2 in a binary column, -0.1 in a [0, 1]
# column) has probability zero. We keep scores finite so that a gate can rank
# and explain the row: the column contributes this many nats instead of -inf.
OUT_OF_SUPPORT_LOG_PROB = -1000.0


#: probability of the 'unseen' bucket of every categorical column
UNSEEN_CATEGORY_PROB = 1e-12
_LOG_UNSEEN_MASS = math.log(UNSEEN_CATEGORY_PROB)
_LOG_SEEN_MASS = math.log1p(-UNSEEN_CATEGORY_PROB)

# Encoder inputs are clipped to this many standard deviations. Any proposal
# q(z|x) keeps the importance sampler valid; clipping keeps an absurd value
# (a unit error x1000) from dragging z far away, so the likelihood blames that
# column rather than every column the wild z then mispredicts.
INPUT_CLIP = 10.0

# A continuous cell is scored at most this many training standard deviations
# from the column's mean. Beyond ~1.8e19 sd the squared residual of a float32
# Gaussian overflows (a value of 1e20 in a N(0, 1) column scored -inf and the
# whole batch raised); at 1e15 sd a cell costs 5e29 / variance nats (5e32 at
# the default min_variance 1e-3; finite for any variance above 1e-8 over 100
# such cells), so such a row still ranks below every real one. Values further
# out tie with each other, and the search's derivatives leave the cell out.
RESIDUAL_LIMIT = 1e15


def _needs_autograd(tensor):
    return torch.is_grad_enabled() and tensor.requires_grad


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
    #: a value inside the support, standing in for missing cells before masking
    support_fill = 0.0
    #: encoder input for a missing cell (a neutral value)
    input_fill = 0.0

    def __init__(self, columns, missing_modelled=None):
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(list(columns), dtype=torch.long))
        modelled = [False] * len(columns) if missing_modelled is None else list(missing_modelled)
        self.register_buffer("missing_modelled", torch.as_tensor(modelled, dtype=torch.bool))

    @property
    def n_columns(self):
        return int(self.columns.numel())

    @property
    def n_params(self):
        return self.params_per_column * self.n_columns

    @property
    def input_width(self):
        return self.n_columns

    def select(self, x):
        """The family's columns of a model matrix ``x`` of shape (..., n_features)."""
        return x.index_select(-1, self.columns)

    def network_input(self, x_cols):
        """Encoder features for the family's columns (missing cells get a neutral value)."""
        missing = torch.isnan(x_cols)
        if may_be_true(missing):
            x_cols = torch.where(missing, torch.full_like(x_cols, self.input_fill), x_cols)
        return self._network_input(x_cols)

    def _network_input(self, x_cols):
        return x_cols

    def log_prob(self, params, x_cols):
        """Per-column log p(x_j | z), shape broadcast of params and x, (..., n_columns).

        A missing cell contributes 0 here when the column's missingness is
        modelled (the missingness family scores it), and
        ``OUT_OF_SUPPORT_LOG_PROB`` when training never saw one.
        """
        missing = torch.isnan(x_cols)
        if not may_be_true(missing):
            return self._log_prob(params, x_cols)
        filled = torch.where(missing, torch.full_like(x_cols, self.support_fill), x_cols)
        log_prob = self._log_prob(params, filled)
        missing_cost = torch.where(
            self.missing_modelled, torch.zeros_like(x_cols), torch.full_like(x_cols, OUT_OF_SUPPORT_LOG_PROB)
        )
        return torch.where(missing, missing_cost, log_prob)

    def _log_prob(self, params, x_cols):
        raise NotImplementedError

    def summed_log_prob(self, params, x_cols):
        """log p(x | z) of the family's columns together, shape (...)."""
        if not _needs_autograd(params):
            summed = self._summed_log_prob_in_place(params, x_cols)
            if summed is not None:
                return summed
        return self.log_prob(params, x_cols).sum(-1)

    def _summed_log_prob_in_place(self, params, x_cols):
        """The sum without per-column intermediates, or None where a family has no such path."""
        return None

    def derivatives(self, params, x_cols, directions):
        """``summed_log_prob``, its gradient in ``params``, and its Hessian in ``params`` times ``directions``.

        For the posterior search. ``params`` has shape (n, n_params) and
        ``directions`` (k, n, n_params); the result's third entry has the
        shape of ``directions``. A row's value depends on that row's
        parameters alone, so one batched Hessian-vector product per direction
        does; families with a closed form override this.
        """
        with torch.enable_grad():
            params = params.detach().requires_grad_(True)
            value = self.summed_log_prob(params, x_cols)
            (gradient,) = torch.autograd.grad(value.sum(), [params], create_graph=True)
            if not gradient.requires_grad:  # log p linear in params, or every cell missing
                return value.detach(), gradient, torch.zeros_like(directions)
            if self.separable_cells:
                hessian_directions = self._cellwise_hessian_times(params, gradient, directions)
            else:
                (hessian_directions,) = torch.autograd.grad(gradient, [params], grad_outputs=directions,
                                                            is_grads_batched=True)
        return value.detach(), gradient.detach(), hessian_directions

    #: each cell's log-probability depends only on that cell's ``params_per_column``
    #: parameters (laid out as ``params_per_column`` blocks of ``n_columns``)
    separable_cells = False

    def _cellwise_hessian_times(self, params, gradient, directions):
        """Hessian times ``directions`` from each cell's own small Hessian block.

        With separable cells the Hessian is block diagonal, a
        params_per_column-square block per cell: one backward pass per
        parameter block (2 for whole numbers) gives every block, where the
        batched product needs one per direction (latent_dim, 8 by default).
        """
        blocks = gradient.chunk(self.params_per_column, dim=-1)
        rows = []
        for block in blocks:
            (second,) = torch.autograd.grad(block.sum(), [params], retain_graph=True, allow_unused=True)
            second = torch.zeros_like(params) if second is None else second
            rows.append(second.detach().chunk(self.params_per_column, dim=-1))
        along = directions.chunk(self.params_per_column, dim=-1)
        return torch.cat([sum(row[b] * along[b] for b in range(len(along))) for row in rows], dim=-1)

    def _missing_cell_cost(self):
        """What a missing cell adds to log p(x | z), per column (see ``log_prob``)."""
        return torch.where(
            self.missing_modelled,
            torch.zeros((), device=self.missing_modelled.device),
            torch.full((), OUT_OF_SUPPORT_LOG_PROB, device=self.missing_modelled.device),
        )

    def mean(self, params):
        """E[x_j | z] in original units."""
        raise NotImplementedError

    def sample(self, params, generator=None):
        """A draw x_j ~ p(x_j | z) in original units."""
        raise NotImplementedError

    def config(self):
        """JSON-able constructor arguments other than tensors held as buffers."""
        return {
            "kind": self.kind,
            "columns": self.columns.tolist(),
            "missing_modelled": self.missing_modelled.tolist(),
        }


class GaussianColumns(ColumnFamily):
    """Gaussian columns, modelled on standardised values.

    The decoder predicts a mean and a variance per column on the standardised
    scale; ``variance = min_variance + softplus(raw)`` keeps the density
    bounded. ``log_prob`` adds the Jacobian ``-log(scale)`` so the result is a
    density of the original value.
    """

    kind = "gaussian"
    params_per_column = 2

    def __init__(self, columns, loc, scale, min_variance=1e-3, missing_modelled=None):
        super().__init__(columns, missing_modelled)
        self.register_buffer("loc", torch.as_tensor(np.asarray(loc), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))
        self.min_variance = float(min_variance)

    def network_input(self, x_cols):
        # standardise first: a missing cell then sits at the training mean, 0
        return torch.nan_to_num((x_cols - self.loc) / self.scale, nan=0.0).clamp(-INPUT_CLIP, INPUT_CLIP)

    def related_values(self, x_cols):
        """(value on the standardised scale, has a residual) per cell, for :mod:`.relations`."""
        usable = ~torch.isnan(x_cols)
        standardised = (torch.where(usable, x_cols, self.loc) - self.loc) / self.scale
        return standardised.clamp(-INPUT_CLIP, INPUT_CLIP), usable

    def _mean_and_variance(self, params):
        mean, raw_variance = params.chunk(2, dim=-1)
        # torch's CPU softplus is ~10x slower on a strided view than on a copy
        return mean, self.min_variance + F.softplus(raw_variance.contiguous())

    def _standardised(self, x_cols):
        """The value in training standard deviations from the mean, within ``RESIDUAL_LIMIT``."""
        return ((x_cols - self.loc) / self.scale).clamp(-RESIDUAL_LIMIT, RESIDUAL_LIMIT)

    def _log_prob(self, params, x_cols):
        mean, variance = self._mean_and_variance(params)
        standardised = self._standardised(x_cols)
        return -0.5 * (LOG_2PI + variance.log() + (standardised - mean) ** 2 / variance) - self.scale.log()

    def _summed_log_prob_in_place(self, params, x_cols):
        # Scoring evaluates this on rows x K x columns: each op below updates
        # one buffer in place, and the constants are added once per row, which
        # halves the passes over that array. Missing cells are masked on the
        # rows x columns input, which is K times smaller.
        missing = torch.isnan(x_cols)
        masked = may_be_true(missing)
        filled = torch.where(missing, self.loc, x_cols) if masked else x_cols
        standardised = self._standardised(filled)
        mean, variance = self._mean_and_variance(params)
        terms = torch.sub(standardised, mean).square_().div_(variance).add_(variance.log_())
        constant = 0.5 * LOG_2PI + self.scale.log()
        if not masked:
            return terms.sum(-1).mul_(-0.5).sub_(constant.sum())
        present = (~missing).to(terms.dtype)
        row_terms = ((missing.to(terms.dtype) * self._missing_cell_cost()) - present * constant).sum(-1)
        return terms.mul_(present).sum(-1).mul_(-0.5).add_(row_terms)

    def derivatives(self, params, x_cols, directions):
        # in closed form: autograd's double backward through these element-wise
        # ops took three quarters of the search's time at 200 features
        gradient, hessian_directions = self._gaussian_derivatives(params, x_cols, directions)
        return self.summed_log_prob(params, x_cols), gradient, hessian_directions

    def _gaussian_derivatives(self, params, x_cols, directions):
        """Gradient and Hessian-times-directions of the Gaussian terms; missing cells add none.

        Nor do cells at ``RESIDUAL_LIMIT``: their cost is constant there, and
        residual^2 / variance^3 overflows float32 (1e30 / 1e-9), which made the
        float32 search on a GPU return NaN.
        """
        missing = torch.isnan(x_cols)
        standardised = self._standardised(torch.where(missing, self.loc, x_cols))
        capped = standardised.abs() >= RESIDUAL_LIMIT
        present = (~(missing | capped)).to(params.dtype).repeat(1, 2)  # for the means' and the variances' halves
        mean, raw_variance = params.chunk(2, dim=-1)
        residual = torch.where(capped, torch.zeros_like(standardised), standardised) - mean
        slope = torch.sigmoid(raw_variance)  # d variance / d raw_variance
        variance = self.min_variance + F.softplus(raw_variance)
        d_variance = 0.5 * (residual.square() / variance - 1.0) / variance
        h_mean_mean = -1.0 / variance
        h_mean_raw = -residual / variance.square() * slope
        h_raw_raw = (0.5 / variance.square() - residual.square() / variance.pow(3)) * slope.square() + (
            d_variance * slope * (1.0 - slope)
        )
        gradient = torch.cat([residual / variance, d_variance * slope], dim=-1) * present
        along_mean, along_raw = directions.chunk(2, dim=-1)
        hessian_directions = torch.cat(
            [h_mean_mean * along_mean + h_mean_raw * along_raw, h_mean_raw * along_mean + h_raw_raw * along_raw],
            dim=-1,
        ) * present
        return gradient, hessian_directions

    def mean(self, params):
        mean, _ = self._mean_and_variance(params)
        return self.loc + self.scale * mean

    def sample(self, params, generator=None):
        mean, variance = self._mean_and_variance(params)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.loc + self.scale * (mean + variance.sqrt() * noise)

    def config(self):
        return {**super().config(), "min_variance": self.min_variance}


#: degrees of freedom a Student-t column starts from (training moves them): at
#: 10 the density is within 0.05 nats of the Gaussian's inside 2 sd
STUDENT_T_INITIAL_DF = 10.0
#: ... and below which they cannot go: at 2 the variance would be infinite
STUDENT_T_MIN_DF = 2.0
#: log(df - 2) moves this many times faster than Adam's step: at 1, 480 steps at
#: 3e-3 took a t(3) column's df from 10 to 9.9 only
STUDENT_T_DF_RATE = 5.0


class StudentTColumns(GaussianColumns):
    """Heavy-tailed continuous columns: a Student-t law on standardised values, degrees of freedom per column.

    The decoder gives the location and the squared scale (``min_variance +
    softplus(raw)``) as for :class:`GaussianColumns`; each column's degrees of
    freedom ``STUDENT_T_MIN_DF + exp(STUDENT_T_DF_RATE raw_df)`` are learned with the
    network, so a column whose residuals are Gaussian drifts towards the
    Gaussian, and one with outlying training values pays less for them.
    """

    kind = "student_t"

    def __init__(self, columns, loc, scale, min_variance=1e-3, missing_modelled=None):
        super().__init__(columns, loc, scale, min_variance, missing_modelled)
        start = math.log(STUDENT_T_INITIAL_DF - STUDENT_T_MIN_DF) / STUDENT_T_DF_RATE
        self.raw_df = nn.Parameter(torch.full((len(columns),), start))

    def degrees_of_freedom(self):
        return STUDENT_T_MIN_DF + torch.exp(STUDENT_T_DF_RATE * self.raw_df)

    def _log_prob(self, params, x_cols):
        location, scale_squared = self._mean_and_variance(params)
        df = self.degrees_of_freedom()
        standardised = self._standardised(x_cols)
        normaliser = (torch.lgamma(0.5 * (df + 1)) - torch.lgamma(0.5 * df) - 0.5 * torch.log(math.pi * df))
        return (normaliser - 0.5 * scale_squared.log()
                - 0.5 * (df + 1) * torch.log1p((standardised - location) ** 2 / (df * scale_squared))
                - self.scale.log())

    def _summed_log_prob_in_place(self, params, x_cols):
        return None  # the Gaussian's in-place sum does not apply

    def derivatives(self, params, x_cols, directions):
        return ColumnFamily.derivatives(self, params, x_cols, directions)

    separable_cells = True

    def sample(self, params, generator=None):
        location, scale_squared = self._mean_and_variance(params)
        uniform = torch.rand(location.shape, generator=generator, device=location.device, dtype=location.dtype)
        uniform = uniform.clamp(1e-7, 1 - 1e-7)
        df = self.degrees_of_freedom().detach().expand_as(location)
        # the inverse CDF (torch has no Student-t quantile); sampling is not a hot path
        quantile = stats.t.ppf(uniform.cpu().double().numpy(), df.cpu().double().numpy())
        draws = torch.as_tensor(quantile, dtype=location.dtype, device=location.device)
        return self.loc + self.scale * (location + scale_squared.sqrt() * draws)


# Quadrature points for the means of families whose mean has no closed form
# on the original scale (whole numbers, log-scale amounts): E[g(Y)] =
# int_0^1 g(F^-1(u)) du at evenly spaced midpoints. 64 points put the mean of
# a log-normal with unit log-variance within 0.6% of exp(1/2).
MEAN_QUADRATURE_POINTS = 64


def _quadrature_levels(reference):
    """Midpoints (i + 1/2) / Q of [0, 1], shaped to broadcast after ``reference``'s dims."""
    levels = (torch.arange(MEAN_QUADRATURE_POINTS, device=reference.device, dtype=reference.dtype) + 0.5)
    return (levels / MEAN_QUADRATURE_POINTS).view(-1, *([1] * reference.dim()))


def _log_logistic_mass(upper, width, lower_is_bottom):
    """log(F(upper) - F(upper - width)) for the standard logistic F, stable in both tails.

    With l = upper - width, F(u) - F(l) = F(u) F(-l) (1 - exp(-width)): a sum
    of three logs that never subtracts two nearly equal numbers. The width
    comes in separately, computed without cancellation, because at large
    values the two edges agree in most of float32's digits. Where
    ``lower_is_bottom`` the bin takes the whole lower tail: log F(upper).
    """
    below_upper = F.logsigmoid(upper)
    if not may_be_true(~lower_is_bottom):
        return below_upper
    interior = below_upper + F.logsigmoid(width - upper) + torch.log(-torch.expm1(-width))
    return torch.where(lower_is_bottom, below_upper, interior)


class WholeNumberColumns(ColumnFamily):
    """Whole-number columns (counts, ages, codes, pixel intensities): a mass per integer.

    ``P(x) = F(t(x + 1/2)) - F(t(x - 1/2))`` under a logistic law F whose
    location and scale the decoder gives on the standardised scale of t(x),
    where t is the identity, or the logarithm for columns spread over orders
    of magnitude. A discretised law cannot spike on the integer grid the way a
    continuous density does when its variance shrinks: each column contributes
    a log-probability, at most 0. A column never negative in training has its
    support at 0 and up, and the bin of 0 takes the whole lower tail, so the
    masses over the support sum to one. A value that is not a whole number,
    or is negative in such a column, is out of support.

    The scale has the same floor as the Gaussian columns' variance:
    ``variance = min_variance + softplus(raw)`` on the standardised scale,
    and the logistic scale is ``sqrt(3 variance) / pi``.
    """

    separable_cells = True
    kind = "whole_number"
    params_per_column = 2

    def __init__(self, columns, loc, scale, log_scale, nonnegative, min_variance=1e-3, missing_modelled=None):
        super().__init__(columns, missing_modelled)
        self.register_buffer("loc", torch.as_tensor(np.asarray(loc), dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), dtype=torch.float32))
        self.register_buffer("log_scale", torch.as_tensor(list(log_scale), dtype=torch.bool))
        # log-scale columns are never negative
        self.register_buffer("nonnegative", torch.as_tensor(list(nonnegative), dtype=torch.bool) | self.log_scale)
        self.min_variance = float(min_variance)

    def in_support(self, x_cols):
        """Whole numbers, and not negative where the column never was."""
        return (x_cols == torch.round(x_cols)) & ~(self.nonnegative & (x_cols < 0))

    def _transform(self, value):
        """t(value), standardised; ``value`` > 0 wherever the column is on the log scale."""
        transformed = torch.where(self.log_scale, torch.log(value.clamp_min(1e-30)), value)
        return (transformed - self.loc) / self.scale

    def network_input(self, x_cols):
        usable = self.in_support(x_cols)  # False on missing cells too
        safe = torch.where(usable, x_cols, torch.zeros_like(x_cols))
        standardised = self._transform(safe + 0.5 * self.log_scale.to(x_cols.dtype))
        neutral = torch.zeros_like(standardised)
        return torch.where(usable, standardised, neutral).clamp(-INPUT_CLIP, INPUT_CLIP)

    def related_values(self, x_cols):
        """(t(x) standardised at the bin's centre, has a residual) per cell, for :mod:`.relations`.

        A cell in the bottom bin has none: that bin takes the whole lower
        tail, so its centre says nothing of how far below the decoder's
        location the value lies (a blank pixel predicted at -3 sd would
        otherwise pass a +3 sd residual on).
        """
        usable = self.in_support(x_cols) & ~(self.nonnegative & (x_cols <= 0))
        safe = torch.where(usable, x_cols, torch.zeros_like(x_cols))
        return self._transform(safe + 0.5 * self.log_scale.to(x_cols.dtype)).clamp(-INPUT_CLIP, INPUT_CLIP), usable

    def _location_and_scale(self, params):
        mean, raw_variance = params.chunk(2, dim=-1)
        variance = self.min_variance + F.softplus(raw_variance.contiguous())
        return mean, torch.sqrt(3.0 * variance) / math.pi

    def _log_prob(self, params, x_cols):
        in_support = self.in_support(x_cols)
        x = torch.where(in_support, x_cols, torch.zeros_like(x_cols))
        bottom = self.nonnegative & (x <= 0)
        location, logistic_scale = self._location_and_scale(params)
        upper = (self._transform(x + 0.5) - location) / logistic_scale
        # t(x + 1/2) - t(x - 1/2) without cancellation; the bottom bin's is unused
        width = torch.where(self.log_scale, torch.log1p(1.0 / (x - 0.5).clamp_min(0.5)), torch.ones_like(x))
        log_mass = _log_logistic_mass(upper, width / self.scale / logistic_scale, bottom)
        return torch.where(in_support, log_mass, torch.full_like(log_mass, OUT_OF_SUPPORT_LOG_PROB))

    def derivatives(self, params, x_cols, directions):
        # In closed form: autograd's double backward through the logistic masses
        # took 46% of an evaluation of the posterior search's derivatives on
        # digits (58 whole-number columns: 0.135 of 0.296 s per 1024 rows, float64).
        gradient, hessian_directions = self._mass_derivatives(params, x_cols, directions)
        return self.summed_log_prob(params, x_cols), gradient, hessian_directions

    def _mass_derivatives(self, params, x_cols, directions):
        """Gradient and Hessian-times-directions of the log-masses in (location, raw variance).

        With a = (t(x + 1/2) - location) / s and b = width / s - a, the
        interior log-mass is log F(a) + log F(b) + log(1 - exp(-(a + b))) (see
        _log_logistic_mass) and the bottom bin's log F(a): derivatives in (a, b),
        then in (location, s), then in the raw variance through
        s = sqrt(3 (min_variance + softplus(raw))) / pi. Missing and
        out-of-support cells have a constant cost: no derivatives.
        """
        missing = torch.isnan(x_cols)
        filled = torch.where(missing, torch.full_like(x_cols, self.support_fill), x_cols)
        moves = self.in_support(filled) & ~missing
        x = torch.where(moves, filled, torch.zeros_like(filled))
        interior = ~(self.nonnegative & (x <= 0))
        location, s = self._location_and_scale(params)
        width = torch.where(self.log_scale, torch.log1p(1.0 / (x - 0.5).clamp_min(0.5)), torch.ones_like(x))
        w = width / self.scale / s
        a = (self._transform(x + 0.5) - location) / s
        b = w - a
        zero = torch.zeros_like(a)
        # h(w) = log(1 - exp(-w)): h' = 1 / expm1(w), h'' = -h' (1 + h')
        h1 = torch.where(interior, 1.0 / torch.expm1(w), zero)
        h2 = -h1 * (1.0 + h1)
        f_a = torch.sigmoid(-a) + h1
        f_b = torch.where(interior, torch.sigmoid(-b) + h1, zero)
        f_aa = -torch.sigmoid(a) * torch.sigmoid(-a) + h2
        f_bb = torch.where(interior, -torch.sigmoid(b) * torch.sigmoid(-b) + h2, zero)
        f_ab = h2
        # a and b in (location, s): da/dloc = -1/s, db/dloc = 1/s, da/ds = -a/s, db/ds = -b/s
        f_loc = (f_b - f_a) / s
        f_s = -(a * f_a + b * f_b) / s
        s2 = s.square()
        f_loc_loc = (f_aa - 2.0 * f_ab + f_bb) / s2
        f_loc_s = (a * f_aa + (b - a) * f_ab - b * f_bb + f_a - f_b) / s2
        f_s_s = (a.square() * f_aa + 2.0 * a * b * f_ab + b.square() * f_bb + 2.0 * (a * f_a + b * f_b)) / s2
        # s in the raw variance r: v = min_variance + softplus(r), s = sqrt(3 v) / pi
        raw = params.chunk(2, dim=-1)[1]
        variance = self.min_variance + F.softplus(raw)
        v_r = torch.sigmoid(raw)
        s_r = s * v_r / (2.0 * variance)
        s_rr = s * (v_r * torch.sigmoid(-raw) / (2.0 * variance) - v_r.square() / (4.0 * variance.square()))
        h_loc_r = f_loc_s * s_r
        h_r_r = f_s_s * s_r.square() + f_s * s_rr
        present = moves.to(params.dtype).repeat(1, 2)
        gradient = torch.cat([f_loc, f_s * s_r], dim=-1) * present
        along_loc, along_r = directions.chunk(2, dim=-1)
        hessian_directions = torch.cat(
            [f_loc_loc * along_loc + h_loc_r * along_r, h_loc_r * along_loc + h_r_r * along_r], dim=-1
        ) * present
        return gradient, hessian_directions

    def _from_standardised(self, draws):
        """The whole number whose bin holds each standardised point of t's scale."""
        transformed = self.loc + self.scale * draws
        value = torch.where(self.log_scale, torch.exp(transformed.clamp(max=80.0)), transformed)
        number = torch.floor(value + 0.5)
        return torch.where(self.nonnegative, number.clamp_min(0.0), number)

    def mean(self, params):
        location, logistic_scale = self._location_and_scale(params)
        levels = _quadrature_levels(location)
        return self._from_standardised(location + logistic_scale * torch.logit(levels)).mean(0)

    def sample(self, params, generator=None):
        location, logistic_scale = self._location_and_scale(params)
        uniform = torch.rand(location.shape, generator=generator, device=location.device, dtype=location.dtype)
        uniform = uniform.clamp(1e-7, 1 - 1e-7)
        return self._from_standardised(location + logistic_scale * torch.logit(uniform))

    def config(self):
        return {**super().config(), "min_variance": self.min_variance,
                "log_scale": self.log_scale.tolist(), "nonnegative": self.nonnegative.tolist()}


class PositiveColumns(GaussianColumns):
    """Positive amounts (prices, weights, incomes): a Gaussian on log x, so a log-normal density of x.

    The Gaussian family works on the standardised log of the value, and
    ``-log x`` (the Jacobian) makes the result a density of x itself, so
    scores stay comparable with every other column, and a unit error (x1000,
    /100) is the same shift whatever the value. A value at or below zero is
    out of support, except a zero in a column whose zeros are modelled
    (``zero_modelled``, see :class:`ZeroColumns`): that zero costs nothing
    here, and the zero family scores it.
    """

    kind = "positive"
    support_fill = 1.0

    def __init__(self, columns, loc, scale, min_variance=1e-3, zero_modelled=None, missing_modelled=None):
        super().__init__(columns, loc, scale, min_variance, missing_modelled)
        modelled = [False] * len(columns) if zero_modelled is None else list(zero_modelled)
        self.register_buffer("zero_modelled", torch.as_tensor(modelled, dtype=torch.bool))

    @staticmethod
    def _positive_and_log(x_cols):
        """(x > 0, log x there and 0 elsewhere): a finite log everywhere, for autograd's sake."""
        positive = x_cols > 0
        return positive, torch.where(positive, x_cols, torch.ones_like(x_cols)).log()

    def _log_values(self, x_cols):
        """log x where x > 0, NaN elsewhere (missing, zero or negative cells)."""
        positive, log_x = self._positive_and_log(x_cols)
        return log_x.masked_fill(~positive, float("nan"))

    def _non_positive_cost(self, x_cols):
        """What a zero or negative cell costs here: 0 for a modelled zero, else out of support."""
        zero_ok = self.zero_modelled & (x_cols == 0)
        return torch.where(zero_ok, torch.zeros_like(x_cols), torch.full_like(x_cols, OUT_OF_SUPPORT_LOG_PROB))

    def network_input(self, x_cols):
        return super().network_input(self._log_values(x_cols))

    def related_values(self, x_cols):
        # a zero of a hurdle column, like a missing cell, has no residual
        return super().related_values(self._log_values(x_cols))

    def _log_prob(self, params, x_cols):
        positive, log_x = self._positive_and_log(x_cols)
        density = super()._log_prob(params, log_x) - log_x
        return torch.where(positive, density, self._non_positive_cost(x_cols))

    def _summed_log_prob_in_place(self, params, x_cols):
        # the Gaussian sum over log x, with non-positive cells passed as missing,
        # then corrected on the rows x columns input (K times smaller): those
        # cells' cost instead of a missing cell's, and the Jacobian -log x
        log_x = self._log_values(x_cols)
        summed = super()._summed_log_prob_in_place(params, log_x)
        present = ~torch.isnan(x_cols)
        non_positive = present & ~(x_cols > 0)
        correction = torch.where(non_positive, self._non_positive_cost(x_cols) - self._missing_cell_cost(),
                                 torch.zeros_like(x_cols))
        correction = correction - torch.nan_to_num(log_x, nan=0.0)
        return summed + correction.sum(-1)

    def derivatives(self, params, x_cols, directions):
        # the Gaussian's closed form on log x; cells that are not positive are
        # constant in the parameters, as missing cells are
        gradient, hessian_directions = self._gaussian_derivatives(params, self._log_values(x_cols), directions)
        return self.summed_log_prob(params, x_cols), gradient, hessian_directions

    def mean(self, params):
        mean, variance = self._mean_and_variance(params)
        # E[exp(loc + scale Y)] for Y ~ N(mean, variance), in closed form
        return torch.exp((self.loc + self.scale * mean + 0.5 * self.scale.square() * variance).clamp(max=80.0))

    def sample(self, params, generator=None):
        return torch.exp(super().sample(params, generator=generator).clamp(max=80.0))

    def config(self):
        return {**super().config(), "zero_modelled": self.zero_modelled.tolist()}


class ZeroColumns(ColumnFamily):
    """Whether a cell is exactly zero, for non-negative amounts that had zeros in training.

    With :class:`PositiveColumns` on the same columns this is a hurdle model:
    p(0) = pi(z), p(x) = (1 - pi(z)) LogNormal(x | z) for x > 0, a mass at
    zero plus a density above it. Missing cells cost nothing here (the
    missingness family scores them).
    """

    separable_cells = True
    kind = "zero"
    #: adds to columns that a value family already covers
    adds_to_columns = True

    def network_input(self, x_cols):
        return (x_cols == 0).to(x_cols.dtype)

    def log_prob(self, params, x_cols):
        target, logits = torch.broadcast_tensors((x_cols == 0).to(params.dtype), params)
        log_prob = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        missing = torch.isnan(x_cols).expand_as(log_prob)
        return torch.where(missing, torch.zeros_like(log_prob), log_prob)

    def adjust_mean(self, params, value_mean):
        """E[x] = (1 - pi) E[x | x > 0]."""
        return torch.sigmoid(-params) * value_mean

    def adjust_sample(self, params, values, generator=None):
        drawn_zero = torch.bernoulli(torch.sigmoid(params), generator=generator).bool()
        return torch.where(drawn_zero, torch.zeros_like(values), values)

    def mean(self, params):
        return torch.sigmoid(params)

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class BernoulliColumns(ColumnFamily):
    """Binary columns with values in {0, 1}: a Bernoulli mass per column."""

    separable_cells = True
    kind = "bernoulli"
    input_fill = 0.5

    def _log_prob(self, params, x_cols):
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

    separable_cells = True
    kind = "continuous_bernoulli"
    support_fill = 0.5
    input_fill = 0.5

    def _distribution(self, params):
        return torch.distributions.ContinuousBernoulli(logits=params, validate_args=False)

    def _log_prob(self, params, x_cols):
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


class CategoricalColumns(ColumnFamily):
    """Categorical columns holding category codes; one softmax per column.

    Each column has its training categories plus an 'unseen' bucket (code
    ``n_categories``) holding a fixed probability ``UNSEEN_CATEGORY_PROB``;
    the training categories share the rest. A learned mass for the bucket
    would be fitted on zero examples and end up arbitrary (3-5 nats was seen),
    too cheap for a typo to stand out; a fixed, tiny mass keeps the
    distribution proper and makes a new category cost about 28 nats.
    """

    kind = "categorical"

    def __init__(self, columns, sizes, missing_modelled=None):
        super().__init__(columns, missing_modelled)
        self.n_categories = [int(size) for size in sizes]

    @property
    def n_params(self):
        return sum(self.n_categories)

    @property
    def input_width(self):
        # one-hot over the training categories and the unseen bucket
        return sum(n + 1 for n in self.n_categories)

    def network_input(self, x_cols):
        parts = []
        for c, n in enumerate(self.n_categories):
            code = x_cols[..., c]
            present = (~torch.isnan(code)).unsqueeze(-1).to(x_cols.dtype)  # a missing cell is all zeros
            one_hot = F.one_hot(torch.nan_to_num(code, nan=0.0).long().clamp(0, n), n + 1).to(x_cols.dtype)
            parts.append(one_hot * present)
        return torch.cat(parts, dim=-1)

    def _logits(self, params):
        return params.split(self.n_categories, dim=-1)

    def _log_prob(self, params, x_cols):
        columns = []
        for c, logits in enumerate(self._logits(params)):
            log_p = torch.log_softmax(logits, dim=-1) + _LOG_SEEN_MASS
            code = x_cols[..., c : c + 1].long()
            unseen = code >= logits.shape[-1]
            code = code.clamp(0, logits.shape[-1] - 1).expand(*log_p.shape[:-1], 1)
            seen_log_p = log_p.gather(-1, code)
            columns.append(torch.where(unseen, torch.full_like(seen_log_p, _LOG_UNSEEN_MASS), seen_log_p))
        return torch.cat(columns, dim=-1)

    def mean(self, params):
        # the most probable training category (a mean has no meaning here)
        return torch.stack([logits.argmax(-1).to(params.dtype) for logits in self._logits(params)], -1)

    def sample(self, params, generator=None):
        draws = []
        for logits in self._logits(params):
            # the unseen bucket is left out: it has no category to generate
            probs = torch.softmax(logits, dim=-1)
            flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
            draws.append(flat.reshape(probs.shape[:-1]).to(params.dtype))
        return torch.stack(draws, -1)

    def config(self):
        return {**super().config(), "sizes": list(self.n_categories)}


class MissingnessColumns(ColumnFamily):
    """Whether a cell is missing, for columns that had missing cells in training.

    Adds log p(missing_j | z) to its columns: the value family then scores
    only present cells, so log p(x_j) = log p(m_j) + [present] log p(x_j | m_j=0, z).
    """

    separable_cells = True
    kind = "missingness"
    #: adds to columns that a value family already covers
    adds_to_columns = True

    def network_input(self, x_cols):
        return torch.isnan(x_cols).to(x_cols.dtype)

    def log_prob(self, params, x_cols):
        target, logits = torch.broadcast_tensors(torch.isnan(x_cols).to(params.dtype), params)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def adjust_mean(self, params, value_mean):
        """The value family's mean stands: it is the mean of a present cell."""
        return value_mean

    def adjust_sample(self, params, values, generator=None):
        drawn_missing = torch.bernoulli(torch.sigmoid(params), generator=generator).bool()
        return torch.where(drawn_missing, torch.full_like(values, float("nan")), values)

    def mean(self, params):
        return torch.sigmoid(params)

    def sample(self, params, generator=None):
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


FAMILIES = {
    cls.kind: cls
    for cls in (GaussianColumns, StudentTColumns, WholeNumberColumns, PositiveColumns, ZeroColumns, BernoulliColumns,
                ContinuousBernoulliColumns, CategoricalColumns, MissingnessColumns)
}


class FactorizedLikelihood(nn.Module):
    """p(x | z) = prod_j p(x_j | z), assembled from column families.

    Parameters
    ----------
    families : list of ColumnFamily
        Disjoint families that together cover every column.
    n_features : int
        Width of the model matrix.
    """

    def __init__(self, families, n_features, relations=False, discrete_relations=False):
        super().__init__()
        self.families = nn.ModuleList(families)
        self.n_features = int(n_features)
        covered = sorted(c for family in self._value_families() for c in family.columns.tolist())
        if covered != list(range(self.n_features)):
            raise ValueError("column families must cover every column exactly once")
        self.relations = self._build_relations() if relations else None
        self.discrete = self._build_discrete() if discrete_relations else None
        self.register_buffer("_column_layers", self._build_column_layers(), persistent=False)

    def _build_column_layers(self):
        """Where each column's terms lie in the families' terms side by side, in the families' order.

        Row l of the result holds, for every column, the position of its
        l-th term (by family order) among the families' ``log_prob`` outputs
        concatenated, or the position of an appended zero where a column has
        fewer terms: see :meth:`column_log_prob`.
        """
        terms = [[] for _ in range(self.n_features)]
        position = 0
        for family in self.families:
            for c in family.columns.tolist():
                terms[c].append(position)
                position += 1
        depth = max(len(t) for t in terms)
        return torch.as_tensor([[t[layer] if layer < len(t) else position for t in terms]
                                for layer in range(depth)], dtype=torch.long)

    def related_families(self):
        """(family, offset of its parameters) for the families :mod:`.relations` links, in order."""
        offsets = np.cumsum([0] + [family.n_params for family in self.families])
        return [(family, int(offset)) for family, offset in zip(self.families, offsets)
                if family.kind in RELATED_KINDS]

    def _build_relations(self):
        locations, spreads = self._numeric_positions()
        # one related column has nothing to relate to
        return LinearRelations(locations, spreads) if len(locations) > 1 else None

    def _numeric_positions(self):
        locations, spreads = [], []
        for family, offset in self.related_families():
            n = family.n_columns
            locations += range(offset, offset + n)
            spreads += range(offset + n, offset + 2 * n)
        return locations, spreads

    def _build_discrete(self):
        offsets = np.cumsum([0] + [family.n_params for family in self.families])
        parents = []
        for family, offset in zip(self.families, offsets):
            if family.kind == "bernoulli":
                parents += [{"column": int(c), "support": 2, "values": [1], "logits": [int(offset) + i],
                             "binary": True} for i, c in enumerate(family.columns.tolist())]
            elif family.kind == "categorical":
                start = int(offset)
                for c, n in zip(family.columns.tolist(), family.n_categories):
                    parents.append({"column": int(c), "support": n, "values": list(range(n)),
                                    "logits": list(range(start, start + n)), "binary": False})
                    start += n
        locations, spreads = self._numeric_positions()
        # a lone discrete column with no numeric column has nothing to relate to
        if not parents or (not locations and len(parents) < 2):
            return None
        return DiscreteParents(parents, locations, spreads)

    def log_prior_of_weights(self):
        """log p(B) of the relations' coefficients (0 without relations), up to a constant."""
        prior = torch.zeros(())
        for linked in (self.relations, self.discrete):
            if linked is not None:
                prior = prior + linked.log_prior()
        return prior

    def _related_values(self, x):
        """The related columns of ``x`` on their families' standardised scales, and where each has a residual."""
        parts = [family.related_values(family.select(x)) for family, _ in self.related_families()]
        return torch.cat([values for values, _ in parts], -1), torch.cat([usable for _, usable in parts], -1)

    def _shifted(self, params, x):
        """The decoder's parameters moved by the discrete columns' categories, then by the numeric residuals before them."""
        params = self._discrete_shifted(params, x)
        if self.relations is None:
            return params
        values, usable = self._related_values(x)
        return self.relations.shifted(params, values, usable)

    def _discrete_shifted(self, params, x):
        if self.discrete is None:
            return params
        return self.discrete.shifted(params, self.discrete.residuals(x))

    def _value_families(self):
        return [family for family in self.families if not getattr(family, "adds_to_columns", False)]

    @property
    def n_params(self):
        return sum(family.n_params for family in self.families)

    @property
    def input_width(self):
        return sum(family.input_width for family in self.families)

    def _split_params(self, params):
        return params.split([family.n_params for family in self.families], dim=-1)

    def network_input(self, x):
        return torch.cat([family.network_input(family.select(x)) for family in self.families], dim=-1)

    def column_log_prob(self, params, x):
        """log p(x_j | z) per original column, shape (..., n_features).

        With relations, a related column's term is log p(x_j | z, x_<j).
        """
        params = self._shifted(params, x)
        batch = torch.broadcast_shapes(params.shape[:-1], x.shape[:-1])
        parts = [family.log_prob(family_params, family.select(x)).expand(*batch, family.n_columns)
                 for family, family_params in zip(self.families, self._split_params(params))]
        # One concatenation and a gather per layer of terms, not an accumulating
        # index_put per family (aten::index + index_put were 19% of this
        # method's time on titanic, 8192 draws). A column's terms are added in
        # the families' order, as the loop of += did, so the sums are the same
        # floats (0 + a == a; a zero appended for the columns with fewer terms).
        layers = self._column_layers
        terms = torch.cat(parts + [params.new_zeros(*batch, 1)] if layers.shape[0] > 1 else parts, dim=-1)
        out = terms.index_select(-1, layers[0])
        for layer in layers[1:]:
            out = out + terms.index_select(-1, layer)
        return out

    def log_prob(self, params, x):
        """log p(x | z) summed over columns, shape (...)."""
        params = self._shifted(params, x)
        total = None
        for family, family_params in zip(self.families, self._split_params(params)):
            part = family.summed_log_prob(family_params, family.select(x))
            total = part if total is None else total + part
        return total

    def derivatives(self, params, x, directions, contracted=False):
        """log p(x | z) summed over columns, its gradient in ``params`` and its Hessian times ``directions``.

        ``params`` (n, n_params), ``directions`` (k, n, n_params); see
        :meth:`ColumnFamily.derivatives`. With ``contracted``, the third entry
        is ``directions^T H directions`` instead, of shape (n, k, k): with
        relations that skips taking the k products back through the shift's
        Jacobian (11% of the posterior search's derivatives on digits).
        """
        # the discrete columns' shift is a constant in params: same derivatives, at the shifted point
        params = self._discrete_shifted(params, x)
        if self.relations is not None:
            # the shift is linear in params: H = J^T H' J, g = J^T g'
            values, usable = self._related_values(x)
            shifted_directions = self.relations.jacobian_times(directions, usable)
            value, gradient, along = self._factorised_derivatives(
                self.relations.shifted(params, values, usable), x, shifted_directions)
            gradient = self.relations.jacobian_transpose_times(gradient, usable)
            if contracted:
                return value, gradient, torch.einsum("knp,jnp->nkj", shifted_directions, along)
            return value, gradient, self.relations.jacobian_transpose_times(along, usable)
        value, gradient, along = self._factorised_derivatives(params, x, directions)
        return value, gradient, torch.einsum("knp,jnp->nkj", directions, along) if contracted else along

    def _factorised_derivatives(self, params, x, directions):
        value, gradients, hessian_directions = 0.0, [], []
        sizes = [family.n_params for family in self.families]
        for family, family_params, family_directions in zip(
            self.families, params.split(sizes, dim=-1), directions.split(sizes, dim=-1)
        ):
            family_value, gradient, along = family.derivatives(family_params, family.select(x), family_directions)
            value = value + family_value
            gradients.append(gradient)
            hessian_directions.append(along)
        return value, torch.cat(gradients, dim=-1), torch.cat(hessian_directions, dim=-1)

    def _assemble(self, params, method, **kwargs):
        out = params.new_empty(params.shape[:-1] + (self.n_features,))
        for family, family_params in zip(self.families, self._split_params(params)):
            if not getattr(family, "adds_to_columns", False):
                out[..., family.columns] = getattr(family, method)(family_params, **kwargs)
        return out

    def mean(self, params):
        """E[x_j | z] per column in original units (the most probable category for categorical columns).

        With relations, a related column's law given z alone has the
        variance its parents' residuals add (exact for Gaussian columns, the
        matching spread for the others).
        """
        if self.discrete is not None or self.relations is not None:
            params = self._with_marginal_spread(params)
        out = self._assemble(params, "mean")
        for family, family_params in self._adding_families(params):
            out[..., family.columns] = family.adjust_mean(family_params, out[..., family.columns])
        return out

    def sample(self, params, generator=None):
        """x ~ p(x | z): zeros where a zero family draws one, NaN where the missingness model draws a missing cell.

        With relations, the related columns are drawn one after another, each
        given z and the values drawn before it.
        """
        out = self._factorised_sample(params, generator)
        if self.discrete is not None:
            for parent in self.discrete.parents:
                drawn = self._factorised_sample(self._shifted(params, out), generator)
                out[..., parent["column"]] = drawn[..., parent["column"]]
        if self.relations is not None:
            for family, _ in self.related_families():
                for column in family.columns.tolist():
                    drawn = self._factorised_sample(self._shifted(params, out), generator)
                    out[..., column] = drawn[..., column]
        elif self.discrete is not None and self.discrete.n_numeric:
            # independent given z and the categories: one draw given the drawn categories
            drawn = self._factorised_sample(self._shifted(params, out), generator)
            columns = [c for family, _ in self.related_families() for c in family.columns.tolist()]
            out[..., columns] = drawn[..., columns]
        return out

    def _with_marginal_spread(self, params):
        """``params`` with the discrete parents' expected shift, and each related column's variance given z alone."""
        decoder = params
        if self.discrete is not None:
            params = self.discrete.shifted(params, self.discrete.expected_residuals(decoder))
        spreads = self.relations.spreads if self.relations is not None else self.discrete.spreads
        if not spreads.numel():
            return params
        min_variance = self.related_families()[0][0].min_variance
        variance = min_variance + F.softplus(params.index_select(-1, spreads))
        if self.relations is not None:
            variance = self.relations.marginal_spread(variance)
        if self.discrete is not None:
            variance = variance + self.discrete.shift_variance(decoder)
        excess = (variance - min_variance).clamp_min(1e-30)
        # softplus^-1(v) = v + log(1 - exp(-v))
        raw = excess + torch.log(-torch.expm1(-excess))
        return params.index_copy(-1, spreads, raw)

    def _factorised_sample(self, params, generator):
        out = self._assemble(params, "sample", generator=generator)
        for family, family_params in self._adding_families(params):
            out[..., family.columns] = family.adjust_sample(family_params, out[..., family.columns], generator)
        return out

    def _adding_families(self, params):
        """(family, its parameters) for the families that add to value families' columns, in order."""
        pairs = zip(self.families, self._split_params(params))
        return [(family, family_params) for family, family_params in pairs if getattr(family, "adds_to_columns", False)]

    def config(self):
        return {"n_features": self.n_features, "families": [family.config() for family in self.families],
                "relations": self.relations is not None, "discrete_relations": self.discrete is not None}

    @classmethod
    def from_config(cls, config):
        """Rebuild with placeholder buffers; ``load_state_dict`` fills them."""
        families = []
        for spec in config["families"]:
            spec = dict(spec)
            family_cls = FAMILIES[spec.pop("kind")]
            if issubclass(family_cls, (GaussianColumns, WholeNumberColumns)):
                n = len(spec["columns"])
                spec.setdefault("loc", np.zeros(n))
                spec.setdefault("scale", np.ones(n))
            families.append(family_cls(**spec))
        # files written before relations existed have none
        return cls(families, config["n_features"], relations=config.get("relations", False),
                   discrete_relations=config.get("discrete_relations", False))


def _is_binary(column):
    present = column[~np.isnan(column)]
    return bool(np.all((present == 0) | (present == 1)))


def _standardisation(X):
    # an all-missing column (possible under handle_missing='model', e.g. a
    # sparse column in one split of arrhythmia) gets loc 0 and scale 1; it is
    # left out of the reductions because np.nanmean warns on an empty slice
    present = ~np.isnan(X).all(axis=0)
    loc, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    loc[present] = np.nanmean(X[:, present], axis=0)
    scale[present] = np.nanstd(X[:, present], axis=0)
    # a constant column keeps unit scale (as in sklearn's StandardScaler); so
    # does one that float32 cells cannot tell from constant (the schema warns)
    scale = np.where(float32_resolves(loc, scale), scale, 1.0)
    return loc, scale


def _assign_kinds(X, likelihood, candidates, forced_binary):
    """Split the non-categorical columns into Gaussian, Bernoulli and continuous-Bernoulli."""
    binary = [j for j in candidates if j in forced_binary or _is_binary(X[:, j])]
    if likelihood == "gaussian":
        gaussian = [j for j in candidates if j not in forced_binary]
        return gaussian, [j for j in candidates if j in forced_binary], []
    if likelihood == "auto":
        return [j for j in candidates if j not in set(binary)], binary, []
    outside = [j for j in candidates if np.nanmin(X[:, j]) < 0 or np.nanmax(X[:, j]) > 1]
    if outside:
        j = outside[0]
        raise ValueError(
            f"likelihood='bernoulli' needs values in [0, 1]; column {j} has values outside it "
            f"(min {np.nanmin(X[:, j]):g}, max {np.nanmax(X[:, j]):g})"
        )
    return [], binary, [j for j in candidates if j not in set(binary)]


def _log_or_nan(values, offset=0.0):
    """log(values + offset) where that is positive, NaN elsewhere (no warnings)."""
    shifted = values + offset
    positive = shifted > 0
    return np.where(positive, np.log(np.where(positive, shifted, 1.0)), np.nan)


def _by_value_kind(candidates, value_kinds, forced_binary):
    """Columns per family from the schema's value kinds (see :mod:`vaefilter.columns`)."""
    def of(*kinds):
        return [j for j in candidates if value_kinds[j] in kinds and j not in forced_binary]

    bernoulli = sorted(set(of("binary")) | set(forced_binary))
    return of("continuous"), bernoulli, of("proportion"), of("count", "integer"), of("positive", "nonnegative")


def build_likelihood(X, likelihood, min_variance, categorical_sizes=None, binary_columns=(), missing_columns=(),
                     value_kinds=None, log_scale_columns=(), relations=False, continuous_family="gaussian",
                     discrete_relations=False):
    """Choose a family for every column of the training model matrix ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training model matrix (NaN marks missing cells).
    likelihood : {'auto', 'gaussian', 'bernoulli'}
        Family of the non-categorical columns. 'auto' follows ``value_kinds``
        (or, without them, gives Bernoulli to columns that are binary in
        ``X`` and Gaussian to the rest); 'gaussian' is Gaussian for every
        column not binary by type; 'bernoulli' needs every value in [0, 1]
        and uses the continuous Bernoulli for columns that are not binary.
    min_variance : float
        Variance floor of Gaussian, log-normal and whole-number columns, on
        the standardised scale.
    categorical_sizes : dict of {int: int}, default=None
        Categorical columns and their number of training categories.
    binary_columns : sequence of int
        Columns that are binary by type (bool), Bernoulli whatever ``likelihood``.
    missing_columns : sequence of int
        Columns whose missingness is modelled.
    value_kinds : dict of {int: str}, default=None
        With ``likelihood='auto'``, the value kind of every non-categorical
        column: 'continuous' (Gaussian), 'binary' (Bernoulli), 'proportion'
        (continuous Bernoulli), 'count' and 'integer' (whole numbers, the
        first never negative), 'positive' (log-normal) and 'nonnegative'
        (a mass at zero and a log-normal above it).
    log_scale_columns : collection of int
        Whole-number columns whose discretised law lives on the log scale.
    relations : bool, default=False
        Link the Gaussian, log-normal and whole-number columns by linear
        relations (see :mod:`vaefilter.model.relations`).
    continuous_family : {'gaussian', 'student_t'}, default='gaussian'
        Family of the continuous columns.
    discrete_relations : bool, default=False
        Shift the related numeric columns' locations, and the binary and
        categorical columns' logits, by the categories of the discrete
        columns before them (see :class:`vaefilter.model.relations.DiscreteParents`).
    """
    categorical_sizes = dict(categorical_sizes or {})
    missing = set(missing_columns)
    candidates = [j for j in range(X.shape[1]) if j not in categorical_sizes]
    whole, positive = [], []
    if likelihood == "auto" and value_kinds is not None:
        gaussian, bernoulli, continuous, whole, positive = _by_value_kind(candidates, value_kinds, set(binary_columns))
    else:
        gaussian, bernoulli, continuous = _assign_kinds(X, likelihood, candidates, set(binary_columns))

    def modelled(columns):
        return [j in missing for j in columns]

    families = []
    if gaussian:
        loc, scale = _standardisation(X[:, gaussian])
        family = StudentTColumns if continuous_family == "student_t" else GaussianColumns
        families.append(family(gaussian, loc, scale, min_variance, modelled(gaussian)))
    if whole:
        log_scale = np.array([j in set(log_scale_columns) for j in whole])
        values = X[:, whole]
        loc, scale = _standardisation(np.where(log_scale, _log_or_nan(values, 0.5), values))
        nonnegative = [value_kinds[j] == "count" for j in whole]
        families.append(WholeNumberColumns(whole, loc, scale, log_scale.tolist(), nonnegative, min_variance,
                                           modelled(whole)))
    if positive:
        loc, scale = _standardisation(_log_or_nan(X[:, positive]))
        zeros = [value_kinds[j] == "nonnegative" for j in positive]
        families.append(PositiveColumns(positive, loc, scale, min_variance, zeros, modelled(positive)))
    if bernoulli:
        families.append(BernoulliColumns(bernoulli, modelled(bernoulli)))
    if continuous:
        families.append(ContinuousBernoulliColumns(continuous, modelled(continuous)))
    if categorical_sizes:
        columns = sorted(categorical_sizes)
        families.append(CategoricalColumns(columns, [categorical_sizes[j] for j in columns], modelled(columns)))
    with_zeros = [j for j in positive if value_kinds[j] == "nonnegative"]
    if with_zeros:
        # before the missingness family: a drawn missing cell overrides a drawn zero
        families.append(ZeroColumns(with_zeros, modelled(with_zeros)))
    if missing:
        families.append(MissingnessColumns(sorted(missing)))
    built = FactorizedLikelihood(families, X.shape[1], relations=relations, discrete_relations=discrete_relations)
    if built.discrete is not None:
        built.discrete.set_frequencies(torch.as_tensor(X, dtype=torch.float64))
    return built
