"""The VAE (Kingma & Welling 2014, arXiv:1312.6114) as MLPs: a Gaussian (or Student-t)
likelihood for numeric columns and a categorical one (softmax over its levels) for categorical
columns.

Normalization lives inside the model (buffers fitted on training rows), so `encode` takes and
`decode` returns raw feature units, and the loss is in the same nats as the serving scores.
The reparameterization noise `eps` is an argument, never drawn inside `forward`.

A model with a column layout (every model since the column schema) takes the schema's matrix
(serving.core.schema): NaN marks a missing cell, a categorical cell holds its level's index. The
encoder sees the observed cells (numeric standardized, categorical one-hot, missing as zeros)
and, if training had missing cells, the mask; the likelihood is over the observed cells only,
so that the importance-weighted score estimates log p(x_obs) (MIWAE, Mattei & Frellsen 2019,
arXiv:1812.02633). A model without a layout (runs made before) is all numeric and takes
complete rows.
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from serving.core.scores import STUDENT_T, STUDENT_T_LOG_NORM, STUDENT_T_NU
from training.config import TrainConfig

LOG_2PI = float(torch.log(torch.tensor(2.0 * torch.pi)))


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Layout:
    """Which columns of the input matrix are numeric and categorical (with their level counts)."""
    numeric: list[int]
    categorical: list[int] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    # The encoder sees the mask when the training rows had missing cells; trained on complete
    # rows it would learn nothing from it (it was always 1), and sees missing cells as zeros
    # (the training mean) at scoring, as the first form of MIWAE does.
    mask: bool = False

    @classmethod
    def from_schema(cls, schema, mask: bool) -> "Layout":
        return cls(schema.numeric_index, schema.categorical_index, schema.level_counts, mask)


@dataclass
class LossTerms:
    """Per row, each (B,): what is minimised is the mean of `loss` over the rows kept."""
    loss: torch.Tensor  # recon_nll + beta * kl
    recon_nll: torch.Tensor  # -log p(x|z), mean over the K samples
    kl: torch.Tensor  # KL(q(z|x) || N(0, I)), or ½‖mu‖² without sampling
    # With a cell cap: the loss with no numeric cell counted further than cap standard
    # deviations off (log_px's cap), what --contamination auto judges the rows by; no gradient
    judged: torch.Tensor | None = None


def variance_floor(config: TrainConfig, std: torch.Tensor,
                   integer: torch.Tensor | None) -> torch.Tensor:
    """The floor of each numeric column's decoder log-variance, in standardized units (std: the
    columns' training stds). A column whose training cells are all integers (integer) has the
    variance of a unit step's rounding, 1/12 in its own units, as a density on integers has no
    finer meaning (dequantization, Theis et al. 2016, arXiv:1511.01844); any other, or every
    column without config.integer_floor, min_x_logvar."""
    floor = torch.full_like(std, config.min_x_logvar)
    if integer is None or not config.integer_floor:
        return floor
    return torch.where(integer, -torch.log(torch.tensor(12.0)) - 2.0 * torch.log(std), floor)


class VAE(nn.Module):
    def __init__(self, n_features: int, config: TrainConfig,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 layout: Layout | None = None, integer: torch.Tensor | None = None):
        """integer (F,) bool: which columns' training cells are all integers (their variance
        floor: variance_floor); None for a model whose saved state has its floors."""
        super().__init__()
        self.n_features, self.latent_dim = n_features, config.latent_dim
        self.sampling, self.min_x_logvar = config.sampling, config.min_x_logvar
        self.layout = layout
        self.student_t = config.likelihood == STUDENT_T
        self.register_buffer("x_shift", torch.zeros(n_features) if mean is None else mean)
        self.register_buffer("x_scale", torch.ones(n_features) if std is None else std)
        numeric = n_features if layout is None else len(layout.numeric)
        columns = slice(None) if layout is None else layout.numeric
        self.register_buffer("x_logvar_floor", variance_floor(
            config, self.x_scale[columns], None if integer is None else integer[columns]))
        # a model saved before the floors were per column had min_x_logvar's everywhere
        self.register_load_state_dict_pre_hook(self._floor_of_older_models)
        levels = 0 if layout is None else sum(layout.levels)
        n_in = n_features if layout is None else numeric + levels + layout.mask * n_features
        hidden = list(config.hidden)
        self.encoder = mlp([n_in, *hidden, 2 * config.latent_dim])
        # "row": the decoder predicts each row's variance; "feature": one learned variance per
        # feature, shared by all rows, which cannot shrink around a row to explain it away
        self.shared_variance = config.decoder_variance == "feature"
        out = (1 if self.shared_variance else 2) * numeric + levels
        self.decoder = mlp([config.latent_dim, *hidden[::-1], out])
        if self.shared_variance:
            self.x_logvar = nn.Parameter(torch.zeros(numeric))
        if layout is not None:
            self.register_buffer("numeric", torch.tensor(layout.numeric, dtype=torch.long),
                                 persistent=False)
            self.register_buffer("categorical", torch.tensor(layout.categorical,
                                                             dtype=torch.long), persistent=False)

    def _floor_of_older_models(self, module, state_dict, prefix, *_):
        state_dict.setdefault(prefix + "x_logvar_floor",
                              torch.full_like(self.x_logvar_floor, self.min_x_logvar))

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input for raw rows (B, F): standardized numeric cells, one-hot levels
        and the mask, missing cells as zeros."""
        if self.layout is None:
            return (x - self.x_shift) / self.x_scale
        observed = ~torch.isnan(x)
        x = torch.where(observed, x, torch.zeros_like(x))
        shift, scale = self.x_shift[self.numeric], self.x_scale[self.numeric]
        parts = [torch.where(observed[:, self.numeric], (x[:, self.numeric] - shift) / scale,
                             torch.zeros_like(shift))]
        for j, n_levels in zip(self.layout.categorical, self.layout.levels):
            levels = torch.arange(n_levels, dtype=x.dtype)
            parts.append(((x[:, j:j + 1] == levels) & observed[:, j:j + 1]).to(x.dtype))
        if self.layout.mask:
            parts.append(observed.to(x.dtype))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw rows (B, F) -> mu, logvar of q(z|x), each (B, D)."""
        mu, logvar = self.encoder(self.encoder_input(x)).chunk(2, dim=-1)
        if not self.sampling:
            logvar = torch.zeros_like(mu)  # a point mass at mu; its closed-form KL is ½‖mu‖²
        return mu, logvar

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor,
                       eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, with eps (K, B, D) -> z (K, B, D); z = mu without sampling."""
        if not self.sampling:
            return mu.expand_as(eps)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z (..., D) -> mean and log-variance of p(x|z) of the numeric columns in raw units,
        each (..., F_numeric), and with categorical columns their levels' logits (..., L)."""
        out = self.decoder(z)
        numeric = self.n_features if self.layout is None else len(self.layout.numeric)
        if self.shared_variance:
            mean, logits = out[..., :numeric], out[..., numeric:]
            logvar = self.x_logvar.expand_as(mean)
        else:
            mean, logvar, logits = out[..., :numeric], out[..., numeric:2 * numeric], \
                out[..., 2 * numeric:]
        # A floor on the variance: a feature that is constant in training would otherwise
        # drive its log-variance to -inf and the likelihood to +inf.
        logvar = torch.maximum(logvar, self.x_logvar_floor)
        shift, scale = (self.x_shift, self.x_scale) if self.layout is None else \
            (self.x_shift[self.numeric], self.x_scale[self.numeric])
        gaussian = (shift + scale * mean, logvar + 2.0 * torch.log(scale))
        return gaussian + (logits,) if self.layout is not None and self.layout.levels \
            else gaussian

    def log_px(self, x: torch.Tensor, decoded: tuple[torch.Tensor, ...],
               cap: float | None = None) -> torch.Tensor:
        """log p(x_obs | z) of rows x (B, F) under decode(z) of z (K, B, D): (K, B). With cap,
        each numeric cell's squared standardized residual ((x - mean) / sd)² counts at most
        cap², as if no cell lay further than cap standard deviations off (Gaussian cells only:
        a Student-t cell is never capped)."""
        x_mean, x_logvar = decoded[:2]
        if self.layout is None:
            return self._numeric_cells(x, x_mean, x_logvar, cap).sum(-1)
        observed = ~torch.isnan(x)
        x = torch.where(observed, x, torch.zeros_like(x))
        cells = self._numeric_cells(x[:, self.numeric], x_mean, x_logvar, cap)
        log_px = torch.where(observed[:, self.numeric], cells, torch.zeros_like(cells)).sum(-1)
        offset = 0
        for j, n_levels in zip(self.layout.categorical, self.layout.levels):
            log_p = torch.log_softmax(decoded[2][..., offset:offset + n_levels], dim=-1)
            code = x[:, j].long().expand(*log_p.shape[:-1]).unsqueeze(-1)
            picked = log_p.gather(-1, code).squeeze(-1)
            log_px = log_px + torch.where(observed[:, j], picked, torch.zeros_like(picked))
            offset += n_levels
        return log_px

    def loss(self, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0,
             cap: float | None = None) -> LossTerms:
        """Negative ELBO with K = eps.shape[0] samples, KL weighted by beta (1 = the ELBO);
        with cap, also the same loss on capped cells (LossTerms.judged)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)  # (K, B, D)
        decoded = self.decode(z)
        recon_nll = -self.log_px(x, decoded).mean(dim=0)  # (B,)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)
        judged = None
        if cap is not None and not self.student_t:
            with torch.no_grad():
                judged = -self.log_px(x, decoded, cap).mean(dim=0) + beta * kl
        return LossTerms(recon_nll + beta * kl, recon_nll, kl, judged)


    def _numeric_cells(self, x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                       cap: float | None) -> torch.Tensor:
        """log p(x_j | z) of numeric cells x (B, F_numeric) under mean, logvar (K, B, F_numeric)."""
        squared = (x - mean) ** 2 * torch.exp(-logvar)
        if self.student_t:
            return STUDENT_T_LOG_NORM - 0.5 * logvar \
                - 0.5 * (STUDENT_T_NU + 1) * torch.log1p(squared / STUDENT_T_NU)
        return -0.5 * (LOG_2PI + logvar + _capped(squared, cap))


def _capped(squared: torch.Tensor, cap: float | None) -> torch.Tensor:
    return squared if cap is None else squared.clamp(max=cap * cap)
