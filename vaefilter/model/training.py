"""The optimisation loop: minibatch Adam on the training loss (-ELBO, or the negative K-sample
importance-weighted bound), early stopping on held-out rows.

With ``trim_fraction > 0`` the loop is a trimmed-likelihood fit (the classic
robust M-estimation step; Neykov & Mueller 2003, "Breakdown point and
computational properties of the trimmed likelihood estimator"): after
``trim_warmup`` epochs, each epoch scores every training row's loss in one
pass without gradients and trains on all but the highest ``trim_fraction``
share; the validation loss that drives early stopping is the same trimmed
mean, from the first epoch (validation rows can be dirty too).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from .._optional import import_optional
from ..band import n_set_aside

# When the monitored loss has stalled for n_iter_no_change epochs, training
# goes on from the best weights with the step size times LR_DECAY_FACTOR, up
# to LR_DECAYS times, and stops at the next stall. It keeps the best weights
# throughout, so the monitored loss can only improve. Chosen by held-out
# log-likelihood on tasks no reported benchmark uses (benchmarks/
# choose_defaults.py; figures in benchmarks/RESULTS.md): on 10-D
# probabilistic PCA a fixed step stopped 0.05-0.1 nats/row short of the exact
# density; restarting with smaller steps got within 0.02-0.03.
LR_DECAY_FACTOR = 0.2
#: The progress bar's title of a fit's main training run.
FIT_TITLE = "vaefilter fit"
LR_DECAYS = 2
#: Epochs trained on every row before the trimming starts: a network that has
#: not yet learned the bulk ranks rows by how far they sit from its start.
#: Chosen on bench_robust's tuning tables only (titanic, penguins; one seed;
#: benchmarks/RESULTS.md): with 10% planted faults, warm-ups of 0, 5 and 20
#: epochs gave ROC-AUC 0.868, 0.880 and 0.872 (untrimmed 0.871) and
#: detection at 1% false rejection 0.548, 0.589 and 0.547 (0.558); with 5%
#: the three tie (0.915-0.918).
TRIM_WARMUP_EPOCHS = 5


def kept_rows(row_losses, fraction):
    """Indices (ascending) of the rows left when the ``fraction`` with the highest loss is set aside.

    Ties break by row index (a stable sort), so the choice is deterministic.
    """
    n_drop = n_set_aside(row_losses.shape[0], fraction)
    order = torch.argsort(row_losses, stable=True)
    return torch.sort(order[: row_losses.shape[0] - n_drop]).values


def _restart_with_smaller_steps(network, optimizer, best_state):
    """Go back to the best weights and shrink every step size by LR_DECAY_FACTOR."""
    if best_state is not None:
        network.load_state_dict(best_state)
    for group in optimizer.param_groups:
        group["lr"] *= LR_DECAY_FACTOR


@dataclass
class TrainingHistory:
    """What happened during training (losses in nats per row: -ELBO, or the negative K-sample bound)."""

    loss_curve: list = field(default_factory=list)
    validation_loss_curve: list = field(default_factory=list)
    best_epoch: int = 0
    n_iter: int = 0
    #: training rows (positions in X_train) set aside under the kept weights; empty without trimming
    set_aside: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    #: {epoch: the weights a run with ``max_epochs=epoch`` would keep}, for ``train``'s ``snapshots``
    snapshots: dict = field(default_factory=dict)


@dataclass
class TrainingConfig:
    max_epochs: int
    batch_size: int
    learning_rate: float
    n_iter_no_change: int
    tol: float
    verbose: int = 0
    decay_learning_rate: bool = True
    trim_fraction: float = 0.0
    trim_warmup: int | None = None  # None: TRIM_WARMUP_EPOCHS, read when training starts
    description: str = FIT_TITLE  # the progress bar's title (which of a fit's runs this is)
    #: draws per row in the loss: 1 is the ELBO (analytic KL), K > 1 the K-sample importance-weighted bound
    n_samples: int = 1


def _noise_per_batch(n_rows, batch_size, latent_dim, generator, device, n_samples=1):
    """The epoch's standard-normal draws, one (batch, latent_dim) block per batch, moved once
    ((batch, n_samples, latent_dim) blocks for the K-sample bound).

    Drawn batch by batch so the stream is the one a per-batch draw gives, and
    copied in one transfer: a copy per batch would make a GPU wait for the
    host at every step.
    """
    shape = (latent_dim,) if n_samples == 1 else (n_samples, latent_dim)
    blocks = [
        torch.randn(min(batch_size, n_rows - start), *shape, generator=generator)
        for start in range(0, n_rows, batch_size)
    ]
    return torch.cat(blocks).to(device).split(batch_size)


def _row_losses(network, X, generator, batch_size, n_samples=1):
    """The loss (-ELBO, or the negative K-sample bound) of every row of X with a fixed generator,
    without gradients (float64, on X's device)."""
    noise = _noise_per_batch(X.shape[0], batch_size, network.latent_dim, generator, X.device, n_samples)
    with torch.inference_mode():
        return torch.cat([
            network.negative_bound(X[start : start + batch_size], batch_noise).double()
            for batch_noise, start in zip(noise, range(0, X.shape[0], batch_size))
        ])


def _trimmed_mean_loss(network, X, generator, batch_size, fraction, n_samples=1):
    """Mean loss over X without its ``fraction`` of highest losses (the plain mean at 0)."""
    if fraction == 0:
        return _mean_loss(network, X, generator, batch_size, n_samples)
    losses = _row_losses(network, X, generator, batch_size, n_samples)
    return float(losses[kept_rows(losses, fraction)].mean())


def _mean_loss(network, X, generator, batch_size, n_samples=1):
    """Mean loss over X with a fixed generator, without gradients."""
    # summed on the device in float64 (as exact as a Python float): one
    # transfer at the end instead of a stall per batch on a GPU
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    noise = _noise_per_batch(X.shape[0], batch_size, network.latent_dim, generator, X.device, n_samples)
    with torch.inference_mode():
        for batch_noise, start in zip(noise, range(0, X.shape[0], batch_size)):
            batch = X[start : start + batch_size]
            total += network.negative_bound(batch, batch_noise).sum().double()
    return float(total) / X.shape[0]


def _progress(config):
    if not config.verbose:
        return None
    tqdm = import_optional("tqdm", extra="progress", purpose="a progress bar with verbose > 0")
    return tqdm.tqdm(total=config.max_epochs, desc=config.description, unit="epoch", leave=True)


def train(network, X_train, X_val, config: TrainingConfig, seed, snapshots=()):
    """Fit ``network`` in place; return its :class:`TrainingHistory`.

    The weights of the epoch with the lowest validation loss are restored.
    Without validation rows, the training loss drives early stopping. With
    ``config.trim_fraction > 0``, see the module's note; the history's
    ``set_aside`` are then the training rows the kept weights would set aside.

    ``snapshots``: epochs (at most ``config.max_epochs``) at which to keep a
    copy of the weights that a run stopped there would restore. Nothing in
    the run depends on them (the schedule reads only the monitored loss), so
    ``history.snapshots[e]`` is what ``max_epochs=e`` gives, at the cost of
    one run; epochs after an early stop get the final weights.
    """
    generator = torch.Generator().manual_seed(int(seed))
    val_generator_seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    trimming = config.trim_fraction > 0
    warmup = TRIM_WARMUP_EPOCHS if config.trim_warmup is None else config.trim_warmup
    # drawn only when trimming, so that without it the stream is the one it always was
    trim_generator_seed = int(torch.randint(2**31 - 1, (1,), generator=generator)) if trimming else None
    # the fused kernel updates every parameter in one launch on a GPU
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate,
                                 fused=X_train.device.type == "cuda" or None)
    history = TrainingHistory()
    best_loss, best_state, stale_epochs = float("inf"), None, 0
    decays_left = LR_DECAYS if config.decay_learning_rate else 0
    n_rows = X_train.shape[0]
    bar = _progress(config)
    try:
        for epoch in range(1, config.max_epochs + 1):
            if trimming and epoch > warmup:
                # the same draws every epoch, so the ranking moves only with the weights
                network.eval()
                losses = _row_losses(network, X_train, torch.Generator().manual_seed(trim_generator_seed),
                                     config.batch_size, config.n_samples)
                rows = kept_rows(losses, config.trim_fraction).to(X_train.device)
                order = rows[torch.randperm(rows.shape[0], generator=generator).to(X_train.device)]
            else:
                order = torch.randperm(n_rows, generator=generator).to(X_train.device)
            network.train()
            n_epoch_rows = order.shape[0]
            noise = _noise_per_batch(n_epoch_rows, config.batch_size, network.latent_dim, generator, X_train.device,
                                     config.n_samples)
            summed_loss = torch.zeros((), dtype=torch.float64, device=X_train.device)
            for batch_noise, start in zip(noise, range(0, n_epoch_rows, config.batch_size)):
                batch = X_train[order[start : start + config.batch_size]]
                loss = network.negative_bound(batch, batch_noise).mean()
                # MAP: the weights' log-prior spread over the training rows (only the relations have one)
                loss = loss - network.likelihood.log_prior_of_weights() / n_rows
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                summed_loss += loss.detach().double() * batch.shape[0]
            epoch_loss = float(summed_loss)
            network.eval()
            if not torch.isfinite(torch.tensor(epoch_loss)):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (the loss is {epoch_loss}); "
                    "lower learning_rate or standardise extreme columns"
                )
            history.loss_curve.append(epoch_loss / n_epoch_rows)
            if X_val is not None and X_val.shape[0]:
                # the same draws every epoch, so the curve moves only with the weights
                val_generator = torch.Generator().manual_seed(val_generator_seed)
                monitored = _trimmed_mean_loss(network, X_val, val_generator, config.batch_size,
                                               config.trim_fraction, config.n_samples)
                history.validation_loss_curve.append(monitored)
            else:
                monitored = history.loss_curve[-1]
            history.n_iter = epoch
            if bar is not None:
                bar.update(1)
                held_out = {"val": f"{monitored:.3f}"} if history.validation_loss_curve else {}
                bar.set_postfix(loss=f"{history.loss_curve[-1]:.3f}", **held_out)
            if monitored < best_loss - config.tol:
                best_loss, stale_epochs, history.best_epoch = monitored, 0, epoch
                best_state = copy.deepcopy(network.state_dict())
            else:
                stale_epochs += 1
                if stale_epochs >= config.n_iter_no_change:
                    if decays_left == 0:
                        break
                    decays_left, stale_epochs = decays_left - 1, 0
                    _restart_with_smaller_steps(network, optimizer, best_state)
            if epoch in snapshots:
                history.snapshots[epoch] = copy.deepcopy(best_state)
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        network.load_state_dict(best_state)
    for epoch in snapshots:
        history.snapshots.setdefault(epoch, copy.deepcopy(network.state_dict()))
    if trimming:
        network.eval()
        losses = _row_losses(network, X_train, torch.Generator().manual_seed(trim_generator_seed), config.batch_size,
                             config.n_samples)
        kept = np.zeros(n_rows, dtype=bool)
        kept[kept_rows(losses, config.trim_fraction).cpu().numpy()] = True
        history.set_aside = np.flatnonzero(~kept)
    return history
