"""The training loss: the ELBO at ``training_samples=1``, the K-sample importance-weighted bound above."""

import math

import numpy as np
import pytest
import torch

from vaefilter import VAEOutlierDetector
from vaefilter.model.training import _noise_per_batch
from vaefilter.persistence import load_model, save_model
from vaefilter.scoring.marginal import log_weights

from test_epoch_selection import _network, _ppca_rows
from test_persistence import _assemble, _parts

QUICK = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=16, proposal_steps=5,
             posterior_search_steps=0, max_epochs=30, random_state=0, epoch_selection="early_stopping")


def _rows(n, seed=0):
    return _ppca_rows(n, seed, n_features=5)


def test_the_k_sample_bound_is_the_scoring_estimate_at_the_same_draws():
    X = torch.as_tensor(_rows(20), dtype=torch.float32)
    network = _network(X).eval()
    noise = torch.randn(20, 8, 2, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        bound = network.negative_bound(X, noise)
        log_w, _ = log_weights(network, X, noise)
    expected = math.log(8) - torch.logsumexp(log_w, dim=1)
    torch.testing.assert_close(bound, expected)


def test_one_draw_is_the_elbo():
    X = torch.as_tensor(_rows(20), dtype=torch.float32)
    network = _network(X).eval()
    noise = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(network.negative_bound(X, noise), network.negative_elbo(X, noise))


def _gradients(network, loss):
    network.zero_grad(set_to_none=True)
    loss.backward()
    return ({n: p.grad.clone() for n, p in network.decoder.named_parameters()},
            {n: p.grad.clone() for n, p in network.encoder.named_parameters()})


def test_the_gradient_is_the_k_sample_bounds():
    """Through the encoder too: its draws, mean and variance all carry the bound's gradient."""
    X = torch.as_tensor(_rows(30), dtype=torch.float32)
    network = _network(X).train()
    noise = torch.randn(30, 8, 2, generator=torch.Generator().manual_seed(2))
    decoder, encoder = _gradients(network, network.negative_bound(X, noise).mean())
    log_w, _ = log_weights(network, X, noise)
    iwae_decoder, iwae_encoder = _gradients(network, (math.log(8) - torch.logsumexp(log_w, dim=1)).mean())
    for name in decoder:
        torch.testing.assert_close(decoder[name], iwae_decoder[name])
    for name in encoder:
        torch.testing.assert_close(encoder[name], iwae_encoder[name])
        assert encoder[name].abs().sum() > 0


def test_noise_blocks_follow_the_number_of_draws():
    blocks = _noise_per_batch(10, 4, 3, torch.Generator().manual_seed(0), "cpu", n_samples=5)
    assert [tuple(b.shape) for b in blocks] == [(4, 5, 3), (4, 5, 3), (2, 5, 3)]
    one = _noise_per_batch(10, 4, 3, torch.Generator().manual_seed(0), "cpu")
    assert [tuple(b.shape) for b in one] == [(4, 3), (4, 3), (2, 3)]


def test_the_estimator_trains_on_the_bound_and_keeps_it_in_model_files(tmp_path):
    X = _rows(200)
    assert VAEOutlierDetector().training_samples == 16
    elbo = VAEOutlierDetector(**QUICK, training_samples=1).fit(X)
    bound = VAEOutlierDetector(**QUICK, training_samples=4).fit(X)
    assert bound.loss_curve_ != elbo.loss_curve_
    again = VAEOutlierDetector(**QUICK, training_samples=4).fit(X)
    np.testing.assert_array_equal(bound.score_samples(X[:20]), again.score_samples(X[:20]))
    path = tmp_path / "m.vaef"
    save_model(bound, path)
    loaded = load_model(path)
    assert loaded.training_samples == 4
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), bound.score_samples(X[:20]))


def test_files_from_before_the_parameter_were_trained_on_the_elbo(tmp_path):
    X = _rows(120)
    path = tmp_path / "m.vaef"
    save_model(VAEOutlierDetector(**QUICK, training_samples=3).fit(X), path)
    header, payload = _parts(path.read_bytes())
    del header["params"]["training_samples"]
    path.write_bytes(_assemble(header, payload))
    assert load_model(path).training_samples == 1


@pytest.mark.parametrize("value", [0, -1, 2.5, "4"])
def test_training_samples_must_be_a_whole_number_of_at_least_one(value):
    with pytest.raises(ValueError, match="training_samples"):
        VAEOutlierDetector(**{**QUICK, "training_samples": value}).fit(_rows(50))
