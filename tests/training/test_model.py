import pytest
import torch

from training.config import TrainConfig
from training.model import VAE


def make(sampling=True, n_features=6, latent_dim=3, decoder_variance="row",
         likelihood="student-t"):
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=latent_dim, hidden=(8, 8), sampling=sampling,
                         decoder_variance=decoder_variance, likelihood=likelihood)
    return VAE(n_features, config, torch.full((n_features,), 2.0), torch.full((n_features,), 3.0))


def test_shapes():
    vae = make()
    x = torch.randn(5, 6)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    eps = torch.randn(4, 5, 3)
    z = vae.reparameterize(mu, logvar, eps)
    assert z.shape == (4, 5, 3)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    x_mean, x_logvar = vae.decode(z)
    assert x_mean.shape == x_logvar.shape == (4, 5, 6)
    terms = vae.loss(x, eps)
    assert terms.loss.shape == terms.recon_nll.shape == terms.kl.shape == (5,)  # per row


@pytest.mark.parametrize("likelihood", ["student-t", "gaussian"])
def test_loss_is_negative_elbo_in_raw_units(likelihood):
    vae = make(likelihood=likelihood)
    x, eps = torch.randn(5, 6), torch.randn(1, 5, 3)
    mu, logvar = vae.encode(x)
    x_mean, x_logvar = vae.decode(vae.reparameterize(mu, logvar, eps))
    scale = torch.exp(0.5 * x_logvar)
    cells = (torch.distributions.StudentT(5.0, x_mean, scale) if likelihood == "student-t"
             else torch.distributions.Normal(x_mean, scale))
    recon = -cells.log_prob(x).sum(-1)[0]
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
        torch.distributions.Normal(0.0, 1.0)).sum(-1)
    terms = vae.loss(x, eps, beta=0.5)
    torch.testing.assert_close(terms.recon_nll, recon)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.loss, recon + 0.5 * kl)


def test_decoder_variance_has_a_floor():
    vae = make()
    with torch.no_grad():
        vae.decoder[-1].bias.fill_(-100.0)
    _, x_logvar = vae.decode(torch.zeros(2, 3))
    # the floor is in normalized units; raw units add 2 log std
    expected = vae.min_x_logvar + 2 * torch.log(torch.tensor(3.0))
    torch.testing.assert_close(x_logvar, torch.full_like(x_logvar, float(expected)))


def test_an_integer_columns_variance_floor_is_a_unit_steps_rounding():
    std, integer = torch.tensor([3.0, 0.1, 3.0]), torch.tensor([True, True, False])

    def floors(**options):
        torch.manual_seed(0)
        vae = VAE(3, TrainConfig(latent_dim=2, hidden=(8,), **options), torch.zeros(3), std,
                  integer=integer)
        with torch.no_grad():
            vae.decoder[-1].bias.fill_(-100.0)
        return vae, vae.decode(torch.zeros(2, 2))[1][0]

    vae, raw = floors()  # raw units: variance 1/12 for integers, else min_x_logvar's share
    expected = torch.where(integer, torch.tensor(1 / 12), torch.exp(torch.tensor(-2.0)) * std**2)
    torch.testing.assert_close(raw.exp(), expected)
    assert TrainConfig().integer_floor and not TrainConfig.from_dict({}).integer_floor
    _, raw = floors(integer_floor=False)  # as before the option: min_x_logvar's everywhere
    torch.testing.assert_close(raw, -2.0 + 2.0 * torch.log(std))
    # a model saved before the floors were per column loads with min_x_logvar's everywhere,
    # and a saved model's own floors are kept whatever it is built with
    state = vae.state_dict()
    older = VAE(3, TrainConfig(latent_dim=2, hidden=(8,), integer_floor=False))
    older.load_state_dict({k: v for k, v in state.items() if k != "x_logvar_floor"})
    assert torch.equal(older.x_logvar_floor, torch.full((3,), -2.0))
    older.load_state_dict(state)
    assert torch.equal(older.x_logvar_floor, vae.x_logvar_floor)


def test_no_sampling_ablation_uses_mu_and_the_gaussian_penalty():
    vae = make(sampling=False)
    x, eps = torch.randn(5, 6), torch.randn(2, 5, 3)
    mu, logvar = vae.encode(x)
    assert torch.equal(logvar, torch.zeros_like(mu))
    z = vae.reparameterize(mu, logvar, eps)
    assert torch.equal(z, mu.expand(2, 5, 3))
    torch.testing.assert_close(vae.loss(x, eps).kl, (0.5 * mu**2).sum(-1))


def test_one_variance_per_feature_is_shared_by_every_row():
    vae = make(decoder_variance="feature")
    with torch.no_grad():
        vae.x_logvar.copy_(torch.linspace(-1.0, 1.0, 6))
    _, x_logvar = vae.decode(torch.randn(4, 5, 3))
    assert x_logvar.shape == (4, 5, 6)
    torch.testing.assert_close(x_logvar, (torch.linspace(-1.0, 1.0, 6)
                                          + 2 * torch.log(torch.tensor(3.0))).expand(4, 5, 6))
