"""A second proposal per row: the Laplace approximation at the row's posterior mode.

The encoder maps every row through one network. For rows unlike most training
rows its q(z|x) can sit away from p(z | x) (the amortisation gap) or be far
narrower than it, and the importance weights then hang on a few draws: on
arrhythmia some test inliers have their posterior mode 5-19 latent units from
the encoder's mean, and even K=5000 draws from q miss it by tens of nats.

For each row, a step up the gradient scaled by q's variance, then a few damped
Newton steps on log p(x, z) over z, started at the encoder's mean, find the
row's mode; the curvature there gives a full-covariance Gaussian,
N(mode, (-Hessian)^-1), the Laplace approximation of p(z | x). The latent
space is small (8 dimensions by default), so the Hessian costs about d forward
passes through the decoder (its Jacobian, in forward mode, and the SiLUs'
second derivatives, in closed form; in float64 on the CPU, see
marginal._in_search_precision) and its eigendecomposition is cheap.

The Hessian is the search's main cost, so it is evaluated as rarely as the
mode allows: not at the encoder's mean (the first step needs only the
gradient), and not after a Newton step that gained little (the row keeps the
curvature from that step's start). On digits a searched row then takes 1.4
evaluations of the derivatives and 4.3 of log p(x, z), against 3.3 and 13.4
for Newton from the mean with a four-point line search, and costs about 1.7
times a row scored at K=100 without the search, against 2.5 times; with the
cheaper evaluation of the derivatives (see _derivatives) 1.6 times, against
1.8 measured alike (CPU time by turns, bench_speed's digits model; the
RESULTS.md section search_cost). Evaluating them less often cost accuracy:
on digits 5-9 stopping after any full Newton step, or taking further steps
with the first curvature, lost 0.003-0.007 nats per row at K=100.

Most rows do not need it, so a row is searched only when its encoder's mean looks
misplaced: when the gradient of log p(x, z) there, scaled by q's standard
deviations, has a norm above SEARCH_THRESHOLD. For a Gaussian posterior as
wide as q that norm is the number of q's standard deviations between q's mean
and the mode. The test is one gradient per row, and a deterministic function
of the row, so choosing rows this way biases nothing. Rows not searched keep
q alone. A fitted model raises that threshold where the search gains little
on its held-out rows (see :func:`raised_threshold`): with the encoder
trained on the 16-sample bound, q is wider than the posterior, the statistic
overstates how far q's mean lies from the mode, and on titanic 39% of the
rows were flagged for a gain of 0.004 nats per row in all.

The importance sampler then draws half of its K draws from the encoder's q and
half from the Laplace Gaussian, and weighs every draw by the mixture density
(deterministic-mixture weights, Owen & Zhou 2000). The estimate of p(x) stays
unbiased whatever the search found, and p / (q_a/2 + q_b/2) is at most twice
p / q_a and twice p / q_b at every z: the weights are never much wilder than
those of the better component, so a search that helps one row cannot cost
another row much.

Every decision (step length, when a row stops) is taken per row from that
row's own values, so a row's search, like its draws, does not depend on the
rows scored with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._torch import LOG_2PI

# Longest Newton step, in latent units (the prior's standard deviation is 1):
# far-out rows need long moves (arrhythmia's farthest mode lies 19 units from
# the encoder's mean and is reached in 10 steps at 5, not at 2), while a
# cap keeps a step on a nearly flat direction from jumping into nonsense.
MAX_STEP = 5.0
# Fractions of the Newton step tried in one batched line search; a row takes
# the best one, and stops once none raises log p(x, z) by STOP_GAIN.
STEP_FRACTIONS = (1.0, 0.5, 0.2, 0.05)
STOP_GAIN = 1e-3
# A full Newton step that raised log p(x, z) by less than this is the row's
# last, and the curvature from its start the proposal's: Newton's method
# converges quadratically, so the next step would gain far less (on digits a
# second step gaining 0.13 nats, the median, was followed by one of 3e-4).
# Chosen on digits 5-9 as inliers (3 seeds, K=100 averaged over 4 draw seeds,
# against K=5000 of the search before this rule): mean gap -0.0133 before,
# -0.0142 at 0.1, -0.0152 at 0.5, while 0.5 scored digits at 1.47x the cost
# without the search against 1.64x at 0.1.
CONVERGED_GAIN = 0.5
# Floor on the curvature (precision) of any direction, so the Laplace
# Gaussian is never wider than 10 latent units along it. Directions of negative
# curvature (away from a mode) take their absolute value: saddle-free Newton.
CURVATURE_FLOOR = 1e-2
# Measured on 12 models (digits, arrhythmia, cardio, breast cancer, wine,
# lympho, synthetic 30 and 200 features; K=100 against K=5000 with every row
# searched): where the mean gap was 0.4-91 nats, the rows above 2 carried all
# of it but at most 0.02 nats; they were 25-95% of the rows there and 0-26%
# elsewhere. A threshold of 1 flagged up to 83% of the rows of the other
# models (cardio 46%, breast cancer 65%), whose whole gap was 0.007-0.05 nats. A pilot of 8 draws from q with an
# effective sample size below 3 flagged more rows and missed some: a q far
# from the posterior can give 8 equally poor draws.
SEARCH_THRESHOLD = 2.0


# How many standard errors of the held-out gains the raised threshold keeps
# below the tolerance. Stopping at the plain sum (0) picks the threshold where
# the noise happened to favour it: choosing on half of each tuning table's test
# rows and scoring the other half, it gave up 0.0076 nats per row on
# modechoice and, from one set of draws, 0.017-0.037 on digits 5-9, against a
# tolerance of 0.005; at 1, with the gains averaged over 4 sets of draws
# (SEARCH_CHOICE_DRAWS), it gave up -0.0035 to +0.0029 on digits 5-9, titanic,
# anes96 and modechoice (2-3 seeds each) while searching 0-99% of the rows
# where 2 searches 30-100% (titanic 36% -> 15% and 43% -> 0%, anes96 71% ->
# 55% and 30% -> 14%); at 2, 20-99% (benchmarks/RESULTS.md, search_tolerance).
GAIN_SE_FACTOR = 1.0
# Sets of K draws whose searched-minus-plain gains are averaged per held-out row.
SEARCH_CHOICE_DRAWS = 4


def raised_threshold(misplacement, gain, tolerance):
    """The largest flag threshold at or above SEARCH_THRESHOLD that gives up at most ``tolerance`` nats per row.

    ``misplacement`` and ``gain`` hold, for held-out rows, the flag's
    statistic and the searched minus the plain estimate of log p(x) (both at
    K draws, averaged over a few sets of draws; 0 where a row is not
    flagged at SEARCH_THRESHOLD). Raising the threshold past a row gives up
    that row's gain, so the rows flagged at SEARCH_THRESHOLD are taken in
    order of misplacement and the threshold stops below the first row at
    which the gains given up, summed and divided by the number of held-out
    rows, plus GAIN_SE_FACTOR times their standard error, exceed
    ``tolerance``. Where they never do, it is the largest misplacement
    seen: only rows more misplaced than any held-out row are searched.

    Why per model: with the encoder trained on the 16-sample bound, the
    search's whole gain on held-out rows was 0.004 nats per row on titanic
    (39% of its rows flagged), 0.015 on anes96, 0.04 on modechoice and 0.88
    on digits 5-9, and within a model no statistic of the row ranked the
    rows by gain much better than chance (the misplacement, the Newton
    step's length in q's units, or KL(Laplace || q) at the encoder's mean;
    benchmarks/RESULTS.md, search_tolerance). Deterministic: a function of
    the held-out rows' values alone.
    """
    misplacement = np.asarray(misplacement, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    if tolerance <= 0 or not misplacement.size:
        return SEARCH_THRESHOLD
    flagged = np.flatnonzero(misplacement > SEARCH_THRESHOLD)
    if not flagged.size:
        return SEARCH_THRESHOLD
    order = flagged[np.argsort(misplacement[flagged], kind="stable")]
    given_up = np.cumsum(gain[order]) / misplacement.size
    standard_error = np.sqrt(np.cumsum(gain[order] ** 2)) / misplacement.size
    over = np.flatnonzero(given_up + GAIN_SE_FACTOR * standard_error > tolerance)
    if not over.size:
        return float(misplacement[order[-1]])
    return float(misplacement[order[over[0] - 1]]) if over[0] else SEARCH_THRESHOLD



@dataclass
class LaplaceProposal:
    """N(mode, V diag(1 / curvature) V^T) per row: the Laplace approximation of p(z | x).

    Attributes
    ----------
    mode : Tensor of shape (n_rows, latent_dim)
    curvature : Tensor of shape (n_rows, latent_dim)
        Eigenvalues of -d^2 log p(x, z) / dz^2 at the mode, floored.
    axes : Tensor of shape (n_rows, latent_dim, latent_dim)
        The matching eigenvectors, one per column.
    """

    mode: torch.Tensor
    curvature: torch.Tensor
    axes: torch.Tensor

    def tensors(self):
        """The three tensors, one entry per row, to cut and pad alongside the rows."""
        return self.mode, self.curvature, self.axes

    def sample(self, noise):
        """``mode + V diag(curvature^-1/2) noise`` for noise of shape (n_rows, K, latent_dim)."""
        scaled = noise * self.curvature.rsqrt().unsqueeze(1)
        return self.mode.unsqueeze(1) + scaled @ self.axes.transpose(-1, -2)

    def log_density(self, z):
        """log N(z; mode, covariance) for z of shape (n_rows, K, latent_dim)."""
        along_axes = (z - self.mode.unsqueeze(1)) @ self.axes
        quadratic = (along_axes.pow(2) * self.curvature.unsqueeze(1)).sum(-1)
        log_det = self.curvature.log().sum(-1, keepdim=True)
        return -0.5 * (quadratic - log_det + z.shape[-1] * LOG_2PI)


def encoder_as_laplace(mean, log_var):
    """q(z|x) itself in LaplaceProposal form: the entries of rows not searched, whose draws stay q's."""
    n_rows, latent_dim = mean.shape
    axes = torch.eye(latent_dim, device=mean.device, dtype=mean.dtype).repeat(n_rows, 1, 1)
    return LaplaceProposal(mean.clone(), (-log_var).exp(), axes)


def misplacement(network, x, mean, log_var):
    """``|std * d log p(x, z) / dz|`` at the encoder's mean, per row; rows above SEARCH_THRESHOLD are searched."""
    return ((0.5 * log_var).exp() * log_joint_gradient(network, x, mean)).norm(dim=-1)


def log_joint_gradient(network, x, z):
    """d log p(x, z) / dz per row, autograd's floats without autograd's graph of the decoder.

    The likelihood's gradient in the decoder's outputs comes from autograd
    (a graph over those outputs alone); the decoder's part is its backward
    pass written out, with the operators autograd runs (``mm`` by the
    weight, ``silu_backward``), and the prior's is -z. The flag test runs on
    every row: autograd through the decoder took 10% of the CSV filter
    (benchmarks/RESULTS.md, bench_filter_speed).
    """
    with torch.no_grad():
        h, pre_activations = z, []
        for layer in network.decoder:
            if isinstance(layer, nn.Linear):
                h = nn.functional.linear(h, layer.weight, layer.bias)
            elif isinstance(layer, nn.SiLU):
                pre_activations.append(h)
                h = nn.functional.silu(h)
            else:
                raise TypeError(f"the posterior search needs a decoder of Linear and SiLU layers, not {layer}")
    with torch.enable_grad():
        params = h.requires_grad_(True)
        (delta,) = torch.autograd.grad(network.likelihood.log_prob(params, x).sum(), [params])
    with torch.no_grad():
        for layer in reversed(network.decoder):
            if isinstance(layer, nn.Linear):
                delta = delta @ layer.weight
            else:
                delta = torch.ops.aten.silu_backward(delta, pre_activations.pop())
        return delta - z


def log_joint(network, x, z):
    """log p(x | z) + log p(z) for one latent point per row."""
    return network.likelihood.log_prob(network.decode(z), x) + network.log_prior(z)


def _derivatives(network, x, z):
    """log p(x, z), its gradient and its negative Hessian in z, per row.

    The decoder's part is taken in closed form (see _decoder_with_tangents
    and _decoder_curvature), and the likelihood's from its families
    (:meth:`~vaefilter.model.likelihoods.ColumnFamily.derivatives`): double
    backward through everything cost 2-5 times as much, most of it in
    autograd's element-wise ops. The likelihood returns J^T H J itself
    (``contracted=True``): with column relations its Hessian products then
    need not be taken back through the shift's Jacobian. With the
    whole-number columns' derivatives also in closed form, one evaluation on
    digits (1024 rows, float64) fell from 0.160 to 0.110 s of CPU time (best
    of 15 by turns in one process; log p(x, z) alone: 0.013 s).
    """
    # the network's weights are constants here, whoever calls
    with torch.no_grad():
        params, jacobian, layers = _decoder_with_tangents(network.decoder, z)
    value, params_gradient, likelihood_hessian = network.likelihood.derivatives(params, x, jacobian.transpose(0, 1),
                                                                               contracted=True)
    with torch.no_grad():
        gradient, curvature = _decoder_curvature(network.decoder, params_gradient, layers)
    # J^T H J from the likelihood, the decoder's own second derivatives, and the prior's -I
    hessian = likelihood_hessian + curvature
    hessian = hessian - torch.eye(z.shape[-1], device=z.device, dtype=z.dtype)
    negative_hessian = -0.5 * (hessian + hessian.transpose(-1, -2))
    return value + network.log_prior(z), gradient - z, negative_hessian


def _decoder_with_tangents(decoder, z):
    """The decoder's output and its Jacobian in z, forward mode, with what the backward pass needs.

    Returns the parameters of p(x|z) (n, P), their Jacobian (n, latent_dim, P)
    and, per SiLU, its pre-activation (n, width) and that one's Jacobian
    (n, latent_dim, width).
    """
    h = z
    # the Jacobian of z is the identity, so the first layer's is its weight:
    # the same values as identity @ weight^T, without a batched product
    # (6 ms per 1024 rows in float64)
    tangents = None
    layers = []
    for layer in decoder:
        if isinstance(layer, nn.Linear):
            h = nn.functional.linear(h, layer.weight, layer.bias)
            tangents = (layer.weight.T.expand(z.shape[0], -1, -1).contiguous() if tangents is None
                        else tangents @ layer.weight.T)
        elif isinstance(layer, nn.SiLU):
            layers.append((h, tangents))
            sigmoid = torch.sigmoid(h)
            tangents = tangents * (sigmoid * (1 + h * (1 - sigmoid))).unsqueeze(1)
            # silu itself, so that values match log_joint's to the last bit
            h = nn.functional.silu(h)
        else:
            raise TypeError(f"the posterior search needs a decoder of Linear and SiLU layers, not {layer}")
    return h, tangents, layers


def _decoder_curvature(decoder, params_gradient, layers):
    """The gradient in z of ``params_gradient . params(z)``, and the decoder's part of its Hessian.

    A Linear layer is linear, so second derivatives come from the SiLUs alone:
    each unit contributes (backpropagated gradient) x silu''(a) x grad(a) grad(a)^T,
    with grad(a) from the forward tangents.
    """
    delta = params_gradient
    curvature = 0.0
    silus = iter(reversed(layers))
    for layer in reversed(decoder):
        if isinstance(layer, nn.Linear):
            delta = delta @ layer.weight
        else:
            pre_activation, tangents = next(silus)
            sigmoid = torch.sigmoid(pre_activation)
            second = sigmoid * (1 - sigmoid) * (2 + pre_activation * (1 - 2 * sigmoid))
            curvature = curvature + torch.einsum("nkw,nw,njw->nkj", tangents, delta * second, tangents)
            delta = delta * (sigmoid * (1 + pre_activation * (1 - sigmoid)))
    return delta, curvature


def _eigen(negative_hessian):
    curvature, axes = torch.linalg.eigh(negative_hessian)
    return curvature.abs().clamp(min=CURVATURE_FLOOR), _signs_fixed(axes)


def _signs_fixed(axes):
    """Each eigenvector with the sign that makes its largest entry positive.

    An eigenvector's sign is the solver's choice, and LAPACK's and cuSOLVER's
    differ. The Laplace draws are ``mode + axes @ (noise / sqrt(curvature))``,
    so a flipped axis gave a row other draws on a GPU than on the CPU, and
    its score another Monte Carlo error: up to 0.17 nats on an H200.
    """
    largest = axes.abs().argmax(dim=-2, keepdim=True)
    signs = torch.gather(axes, -2, largest).sign()
    return axes * torch.where(signs == 0, torch.ones_like(signs), signs)


def _newton_step(gradient, curvature, axes):
    """The saddle-free Newton step, capped at MAX_STEP units."""
    step = axes @ ((axes.transpose(-1, -2) @ gradient.unsqueeze(-1)) / curvature.unsqueeze(-1))
    step = step.squeeze(-1)
    length = step.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return step * (MAX_STEP / length).clamp(max=1.0)


def _value_and_gradient(network, x, z):
    """log p(x, z) and its gradient in z, per row, by one backward pass."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_joint(network, x, z)
        (gradient,) = torch.autograd.grad(value.sum(), [z])
    return value.detach(), gradient


def laplace_proposals(network, x, start, max_steps, min_rows=None, start_variance=None):
    """Newton's method on log p(x, z) from ``start``, then the Laplace Gaussian at the point reached.

    With ``start_variance`` (the encoder's variance at ``start``), the first
    step is the gradient scaled by it: Newton's step were q's precision the
    curvature, which needs one backward pass instead of the Hessian. It is no
    curvature for the proposal, so every row then evaluates its own. (On
    digits that step was 1.6 times the Newton step's length, in the median,
    and pointed within 32 degrees of it; the line search cuts it to length.)

    Each step tries its full length first (one evaluation of log p(x, z) per
    row); rows that it does not raise try the peak of a parabola, then
    shorter fractions (see :func:`_line_search`). A row stops when no step
    raises log p(x, z) by STOP_GAIN (it stays where it is, with its curvature
    there), or once a full Newton step raised it by less than CONVERGED_GAIN:
    the row takes that step and keeps the curvature from its start, which
    saves one evaluation of the derivatives per row. Otherwise it stops
    after ``max_steps`` steps. Only rows still moving are computed, padded to
    at least ``min_rows`` rows (default: all rows of ``x``), since BLAS picks
    its kernels, and so its rounding, by the matrix shape: a row's result
    must not depend on how many other rows still move.
    """
    min_rows = x.shape[0] if min_rows is None else min(int(min_rows), x.shape[0])
    z = start.detach().clone()
    preconditioned = start_variance is not None and max_steps > 1
    if preconditioned:
        value, gradient = _value_and_gradient(network, x, z)
        curvature = 1.0 / start_variance.to(z.dtype)
        axes = torch.eye(z.shape[-1], device=z.device, dtype=z.dtype).repeat(z.shape[0], 1, 1)
    else:
        value, gradient, negative_hessian = _derivatives(network, x, z)
        curvature, axes = _eigen(negative_hessian)
    moving = torch.arange(z.shape[0], device=z.device)
    for iteration in range(max_steps):
        if not moving.numel():
            break
        count = moving.numel()
        rows = _padded_rows(moving, min_rows)
        step = _newton_step(gradient[rows], curvature[rows], axes[rows])
        gain, fraction = _line_search(network, x, z, value, gradient, step, moving, min_rows)
        step = step[:count]
        moved = gain > STOP_GAIN
        z[moving[moved]] += fraction[moved].unsqueeze(-1) * step[moved]
        # after q's step every row goes on: q's precision is no curvature for the proposal
        if not (preconditioned and iteration == 0):
            converged = moved & (fraction == 1) & (gain < CONVERGED_GAIN)
            moving = moving[moved & ~converged]
        if not moving.numel():
            break
        rows = _padded_rows(moving, min_rows)
        found = _derivatives(network, x[rows], z[rows])
        found = (*found[:2], *_eigen(found[2]))
        for buffer, part in zip((value, gradient, curvature, axes), found):
            buffer[moving] = part[: moving.numel()]
    return LaplaceProposal(z, curvature, axes)


def _line_search(network, x, z, value, gradient, step, moving, min_rows):
    """Gains in log p(x, z) of the rows ``moving``, and the fractions of their ``step`` that give them.

    ``step`` holds one step per row of ``moving`` padded to ``min_rows`` (see
    :func:`laplace_proposals`).

    Every row tries its full step. Rows it does not raise by STOP_GAIN try the
    maximum of the parabola through log p(x, z) and its slope at the start
    and through the full step's value, and rows that one fails too the best
    of the shorter STEP_FRACTIONS; a row's result comes from its own values.
    """
    count = moving.numel()
    rows = _padded_rows(moving, min_rows)
    with torch.no_grad():
        gain = (log_joint(network, x[rows], z[rows] + step) - value[rows])[:count].clone()
    step = step[:count]
    fraction = torch.ones(count, device=z.device, dtype=z.dtype)
    failed = torch.nonzero(gain <= STOP_GAIN).squeeze(1)
    if failed.numel():
        slope = (gradient[moving[failed]] * step[failed]).sum(-1)
        # f(t) = f(0) + slope t - c t^2 / 2 through f(1): its maximum, where f(1) < f(0) + STOP_GAIN
        peak = (slope / (2 * (slope - gain[failed])).clamp(min=1e-12)).clamp(min=STEP_FRACTIONS[-1], max=0.5)
        gain[failed], fraction[failed] = _tried(network, x, z, value, step, moving, failed, peak.unsqueeze(1),
                                                min_rows)
    failed = torch.nonzero(gain <= STOP_GAIN).squeeze(1)
    if failed.numel():
        shorter = torch.tensor(STEP_FRACTIONS[1:], device=z.device, dtype=z.dtype)
        gain[failed], fraction[failed] = _tried(network, x, z, value, step, moving, failed,
                                                shorter.expand(failed.numel(), -1), min_rows)
    return gain, fraction


def _tried(network, x, z, value, step, moving, subset, fractions, min_rows):
    """The best gain of rows ``moving[subset]`` over their ``fractions`` of ``step``, and that fraction."""
    padded = _padded_rows(subset, min_rows)
    n = subset.numel()
    padded_fractions = torch.cat([fractions, fractions[:1].expand(padded.numel() - n, -1)])
    tried_rows, tried_step = moving[padded], step[padded]
    with torch.no_grad():
        tried = torch.stack([log_joint(network, x[tried_rows], z[tried_rows] + f.unsqueeze(-1) * tried_step)
                             for f in padded_fractions.T], dim=1)[:n]
    best_value, best = tried.max(dim=1)
    return best_value - value[moving[subset]], fractions.gather(1, best.unsqueeze(1)).squeeze(1)


def _padded_rows(rows, min_rows):
    """``rows``, padded to ``min_rows`` entries by repeating its first one."""
    if rows.numel() >= min_rows:
        return rows
    return torch.cat([rows, rows[:1].expand(min_rows - rows.numel())])


def mixture_draws(network, mean, log_var, laplace, noise):
    """Draws ``z`` of shape (n_rows, K, latent_dim) from the two-component proposal, and log q(z).

    The first half of the K draws is ``mean + std * noise``, the rest comes
    from ``laplace`` with the same noise; log q is the equal-weight mixture
    density at every draw, whichever component it came from.
    """
    n_draws = noise.shape[1]
    n_first = n_draws // 2
    std = (0.5 * log_var).exp().unsqueeze(1)
    z = torch.cat([mean.unsqueeze(1) + std * noise[:, :n_first], laplace.sample(noise[:, n_first:])], dim=1)
    log_encoder = network.log_prior((z - mean.unsqueeze(1)) / std) - 0.5 * log_var.sum(-1, keepdim=True)
    log_share = math.log(n_first / n_draws), math.log(1 - n_first / n_draws)
    log_q = torch.logaddexp(log_share[0] + log_encoder, log_share[1] + laplace.log_density(z))
    return z, log_q
