"""VAEOutlierDetector: the scikit-learn face of vaefilter (no torch details here)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .band import band_from_scores, signed_distance, validate_percentiles
from .devices import resolve_device
from .likelihoods import build_likelihood
from .marginal import DEFAULT_MAX_BATCH_ELEMENTS, check_finite_scores, estimate_log_marginal, importance_noise
from .network import VAENetwork
from .training import TrainingConfig, train

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32_range(X):
    """Values beyond float32 would silently become inf inside the model."""
    too_large = np.abs(X) > _FLOAT32_MAX
    if too_large.any():
        row, col = map(int, np.argwhere(too_large)[0])
        raise ValueError(
            f"X has a value too large for float32 at row {row}, column {col} "
            f"({X[row, col]!r}); rescale that column"
        )


class VAEOutlierDetector(OutlierMixin, BaseEstimator):
    """Data-validation gate built on a variational autoencoder.

    The detector learns p(x, z) = p(z) p(x|z) from rows known to be valid and
    scores new rows by their marginal log-likelihood log p(x), estimated by
    importance sampling with the encoder q(z|x) as proposal. A band of
    percentiles of log p(x) on held-out valid rows separates valid from invalid
    rows: by default rows between the 25th and 75th percentile are valid.

    Parameters
    ----------
    latent_dim : int, default=8
        Dimension of the latent variable z.

    hidden_layer_sizes : array-like of int, default=(128, 128)
        Widths of the encoder's hidden layers; the decoder mirrors them. An
        empty tuple gives linear encoder and decoder maps.

    likelihood : {'auto', 'gaussian', 'bernoulli'}, default='auto'
        Family of p(x_j|z) per column. 'gaussian': a mean and a variance (with
        a floor, see ``min_variance``) per column, on standardised values.
        'bernoulli': data in [0, 1]; binary columns get a Bernoulli mass, others
        the continuous Bernoulli density. 'auto': Bernoulli for columns that are
        binary in the training rows, Gaussian for the rest.

    n_importance_samples : int, default=100
        K, the number of draws from q(z|x) per row when estimating log p(x).
        K=1 gives the ELBO; larger K tightens the estimate at linear cost.

    max_epochs : int, default=200
        Maximum number of passes over the training rows.

    batch_size : int, default=128
        Rows per optimisation step (capped at the number of training rows).

    learning_rate : float, default=1e-3
        Adam's step size.

    validation_fraction : float, default=0.2
        Share of the rows given to ``fit`` that are held out: never trained
        on, used for early stopping and to calibrate the band. With 0, the
        training rows play both roles (the band is then optimistic).

    threshold_percentiles : tuple of (float or None, float or None), default=(25, 75)
        Percentiles of validation log p(x) that bound the valid band. None
        drops a side: ``(1, None)`` rejects only the least likely ~1% of valid
        rows.

    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` in the validation
        loss before training stops.

    tol : float, default=1e-4
        Minimum improvement of the validation loss (nats per row).

    min_variance : float, default=1e-3
        Floor of the variance of Gaussian columns, in units of the column's
        training variance. It bounds the density so that no row can score
        +inf on a column the model has learned to predict exactly.

    random_state : int, RandomState instance or None, default=None
        Fixes the validation split, the initial weights, the minibatch order,
        the training noise and the importance samples.

    device : {'auto', 'cpu', 'cuda'}, default='auto'
        Where torch computes. 'auto' takes a GPU when one is available.

    verbose : int, default=0
        If > 0, show a progress bar (requires the ``progress`` extra, tqdm).

    Attributes
    ----------
    thresholds_ : tuple of (float or None, float or None)
        The band ``(lower, upper)`` of log p(x), nats per row.

    validation_scores_ : ndarray of shape (n_validation,)
        log p(x) of the rows the band was calibrated on.

    loss_curve_ : list of float
        Training -ELBO (nats per row) after each epoch.

    validation_loss_curve_ : list of float
        Held-out -ELBO (nats per row) after each epoch; empty when
        ``validation_fraction=0``.

    n_iter_ : int
        Number of epochs run.

    best_epoch_ : int
        Epoch whose weights were kept (lowest held-out loss).

    network_ : torch.nn.Module
        The fitted encoder, decoder and likelihood.

    n_features_in_ : int
        Number of features seen during ``fit``.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during ``fit``, when X has string column names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based outlier detector.
    sklearn.mixture.GaussianMixture : Density model with exact log-likelihood.

    Examples
    --------
    >>> import numpy as np
    >>> from vaefilter import VAEOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(300, 3))
    >>> det = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(16,),
    ...                          max_epochs=20, random_state=0).fit(X)
    >>> det.predict([[0.0, 0.0, 0.0], [8.0, 8.0, 8.0]])
    array([ 1, -1])
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": ["array-like"],
        "likelihood": [StrOptions({"auto", "gaussian", "bernoulli"})],
        "n_importance_samples": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "threshold_percentiles": [tuple, list],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "min_variance": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        latent_dim=8,
        hidden_layer_sizes=(128, 128),
        likelihood="auto",
        n_importance_samples=100,
        max_epochs=200,
        batch_size=128,
        learning_rate=1e-3,
        validation_fraction=0.2,
        threshold_percentiles=(25, 75),
        n_iter_no_change=10,
        tol=1e-4,
        min_variance=1e-3,
        random_state=None,
        device="auto",
        verbose=0,
    ):
        self.latent_dim = latent_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.likelihood = likelihood
        self.n_importance_samples = n_importance_samples
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.threshold_percentiles = threshold_percentiles
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.min_variance = min_variance
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the VAE on valid rows and calibrate the band on a held-out part.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows known to be valid. At least two.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The fitted detector.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        _check_float32_range(X)
        percentiles = validate_percentiles(self.threshold_percentiles)
        hidden = self._validated_hidden_layer_sizes()
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)

        train_rows, val_rows = self._split_rows(X.shape[0], rng)
        init_seed, train_seed, self.importance_seed_ = rng.randint(np.iinfo(np.int32).max, size=3)
        X_train = X[train_rows]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            likelihood = build_likelihood(X_train, self.likelihood, self.min_variance)
            network = VAENetwork(likelihood, self.latent_dim, hidden).to(device)

        config = TrainingConfig(
            max_epochs=self.max_epochs,
            batch_size=min(self.batch_size, len(train_rows)),
            learning_rate=self.learning_rate,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            verbose=self.verbose,
        )
        val_tensor = self._to_tensor(X[val_rows], device) if len(val_rows) else None
        history = train(network, self._to_tensor(X_train, device), val_tensor, config, train_seed)

        self.network_ = network.eval()
        self.loss_curve_ = history.loss_curve
        self.validation_loss_curve_ = history.validation_loss_curve
        self.n_iter_ = history.n_iter
        self.best_epoch_ = history.best_epoch
        calibration_rows = X[val_rows] if len(val_rows) else X_train
        self.validation_scores_ = self._log_marginal(calibration_rows).log_px
        check_finite_scores(self.validation_scores_)
        self.thresholds_ = band_from_scores(self.validation_scores_, percentiles)
        return self

    def _validated_hidden_layer_sizes(self):
        sizes = list(self.hidden_layer_sizes)
        if any(not isinstance(h, (Integral, np.integer)) or h < 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        return tuple(int(h) for h in sizes)

    def _split_rows(self, n_samples, rng):
        order = rng.permutation(n_samples)
        n_val = int(np.ceil(self.validation_fraction * n_samples)) if self.validation_fraction > 0 else 0
        n_val = min(n_val, n_samples - 1)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    # -------------------------------------------------------------- scoring
    @staticmethod
    def _to_tensor(X, device):
        # a copy: inputs may be read-only memory maps, which torch refuses to share
        return torch.tensor(np.asarray(X, dtype=np.float32), device=device)

    def _network(self):
        """The fitted network on the device asked for now (models move with persistence)."""
        device = resolve_device(self.device)
        if next(self.network_.parameters()).device != device:
            self.network_.to(device)
        return self.network_

    def _log_marginal(self, X):
        network = self._network()
        device = next(network.parameters()).device
        noise = importance_noise(self.n_importance_samples, network.latent_dim, self.importance_seed_, device)
        return estimate_log_marginal(network, self._to_tensor(X, device), noise, DEFAULT_MAX_BATCH_ELEMENTS)

    def _validate_for_scoring(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        _check_float32_range(X)
        return X

    def score_samples(self, X):
        """Estimated log p(x) of each row, in nats (higher is more typical).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        log_px : ndarray of shape (n_samples,)
            Importance-sampled log marginal likelihood per row. Deterministic
            for a fitted model, and independent of the other rows in X.
        """
        log_px = self._log_marginal(self._validate_for_scoring(X)).log_px
        check_finite_scores(log_px)
        return log_px

    def decision_function(self, X):
        """Signed distance of log p(x) to the band, in nats: > 0 inside.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to score.

        Returns
        -------
        distance : ndarray of shape (n_samples,)
            ``min(log p(x) - lower, upper - log p(x))``, with a missing side left out.
        """
        check_is_fitted(self)
        return signed_distance(self.score_samples(X), self.thresholds_)

    def predict(self, X):
        """+1 for rows inside the band (valid), -1 for rows outside (invalid).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to classify.

        Returns
        -------
        is_inlier : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def score(self, X, y=None):
        """Mean log p(x) of the rows, nats per row (for model selection).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows, ideally valid ones not seen in training.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        mean_log_px : float
        """
        return float(np.mean(self.score_samples(X)))

    def calibrate(self, X, threshold_percentiles=None):
        """Re-derive the band from a separate set of valid rows, without retraining.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows known to be valid, not used in training.

        threshold_percentiles : tuple, default=None
            Percentiles for the new band; defaults to ``self.threshold_percentiles``.

        Returns
        -------
        self : object
        """
        percentiles = validate_percentiles(
            self.threshold_percentiles if threshold_percentiles is None else threshold_percentiles
        )
        scores = self.score_samples(X)
        self.validation_scores_ = scores
        self.thresholds_ = band_from_scores(scores, percentiles)
        return self

    def effective_sample_size(self, X):
        """Effective sample size of each row's importance weights, in [1, K].

        Near K the encoder's proposal matches the posterior and log p(x) is
        reliable; near 1 a single draw dominates and the estimate is noisy.
        """
        return self._log_marginal(self._validate_for_scoring(X)).effective_sample_size

    @property
    def offset_(self):
        """The lower threshold, when the band has no upper side.

        Only then is ``decision_function`` a translation of ``score_samples``
        (``decision_function = score_samples - offset_``), as in scikit-learn's
        other outlier detectors.
        """
        check_is_fitted(self)
        lower, upper = self.thresholds_
        if lower is None or upper is not None:
            raise AttributeError("offset_ exists only for a lower-only band, e.g. threshold_percentiles=(1, None)")
        return lower

    # ---------------------------------------------------------- persistence
    def __getstate__(self):
        # a copy: object.__getstate__ may hand back the live __dict__
        state = dict(super().__getstate__())
        network = state.pop("network_", None)
        if network is not None:
            # a state dict on the CPU: loads anywhere, whatever device trained it
            state["_network_checkpoint"] = {
                "config": network.config(),
                "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
            }
        return state

    def __setstate__(self, state):
        checkpoint = state.pop("_network_checkpoint", None)
        super().__setstate__(state)
        if checkpoint is not None:
            network = VAENetwork.from_config(checkpoint["config"])
            network.load_state_dict(checkpoint["state_dict"])
            self.network_ = network.eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
