"""The VAE (Kingma & Welling 2014, arXiv:1312.6114) as MLPs with a Gaussian likelihood.

Normalization lives inside the model (buffers fitted on training rows), so `encode` takes and
`decode` returns raw feature units, and the loss is in the same nats as the serving scores.
The reparameterization noise `eps` is an argument, never drawn inside `forward`.
"""

from dataclasses import dataclass

import torch
from torch import nn

from training.config import TrainConfig

LOG_2PI = float(torch.log(torch.tensor(2.0 * torch.pi)))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class LossTerms:
    """Per row, each (B,): what is minimised is the mean of `loss` over the rows kept."""
    loss: torch.Tensor  # recon_nll + beta * kl
    recon_nll: torch.Tensor  # -log p(x|z), mean over the K samples
    kl: torch.Tensor  # KL(q(z|x) || N(0, I)), or ½‖mu‖² without sampling


class VAE(nn.Module):
    def __init__(self, n_features: int, config: TrainConfig,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.n_features, self.latent_dim = n_features, config.latent_dim
        self.sampling, self.min_x_logvar = config.sampling, config.min_x_logvar
        self.register_buffer("x_shift", torch.zeros(n_features) if mean is None else mean)
        self.register_buffer("x_scale", torch.ones(n_features) if std is None else std)
        hidden = list(config.hidden)
        self.encoder = mlp([n_features, *hidden, 2 * config.latent_dim])
        # "row": the decoder predicts each row's variance; "feature": one learned variance per
        # feature, shared by all rows, which cannot shrink around a row to explain it away
        self.shared_variance = config.decoder_variance == "feature"
        out = n_features if self.shared_variance else 2 * n_features
        self.decoder = mlp([config.latent_dim, *hidden[::-1], out])
        if self.shared_variance:
            self.x_logvar = nn.Parameter(torch.zeros(n_features))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw rows (B, F) -> mu, logvar of q(z|x), each (B, D)."""
        mu, logvar = self.encoder((x - self.x_shift) / self.x_scale).chunk(2, dim=-1)
        if not self.sampling:
            logvar = torch.zeros_like(mu)  # a point mass at mu; its closed-form KL is ½‖mu‖²
        return mu, logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor,
                       eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, with eps (K, B, D) -> z (K, B, D); z = mu without sampling."""
        if not self.sampling:
            return mu.expand_as(eps)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) -> mean and log-variance of p(x|z) in raw units, each (..., F)."""
        if self.shared_variance:
            mean = self.decoder(z)
            logvar = self.x_logvar.expand_as(mean)
        else:
            mean, logvar = self.decoder(z).chunk(2, dim=-1)
        # A floor on the variance: a feature that is constant in training would otherwise
        # drive its log-variance to -inf and the likelihood to +inf.
        logvar = torch.clamp(logvar, min=self.min_x_logvar)
        return self.x_shift + self.x_scale * mean, logvar + 2.0 * torch.log(self.x_scale)

    def loss(self, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0) -> LossTerms:
        """Negative ELBO with K = eps.shape[0] samples, KL weighted by beta (1 = the ELBO)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)  # (K, B, D)
        x_mean, x_logvar = self.decode(z)  # (K, B, F)
        log_px = -0.5 * (LOG_2PI + x_logvar + (x - x_mean) ** 2 * torch.exp(-x_logvar)).sum(-1)
        recon_nll = -log_px.mean(dim=0)  # (B,)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)
        return LossTerms(recon_nll + beta * kl, recon_nll, kl)
