"""The robustness levers that `vae train` has no option for, so that bench/develop.py can
measure them beside the recipes it can train (the report shows every one it tried):

    members: M        an ensemble of M models (seeds s, s + 1000, ...) scored as one mixture:
                      -log mean_m p_m(x), the log-mean-exp of the members' IWAE likelihoods
    bag: n            each member fitted on its own n random rows (IsolationForest's subsample)
    transform: T      a per-column input transform fitted on the training rows: "rank-gauss"
                      (quantiles to a normal) or "log" (log1p of the columns skewed past 2)
    steps: N          training stopped after about N optimizer steps, no early stopping: an
                      under-fitted model has not memorised its anomalies yet (ODIM)
    steps: "bimodal"  the length among LENGTHS whose training rows' scores are the most
                      bimodal (a two-component Gaussian mixture's separation): ODIM's choice
                      without labels
    refit: q          two passes: a small model (latent 2, hidden 64,64) flags the share q of the
                      training rows it scores worst, and the model is trained on the others
    likelihood: L     the decoder's density of a cell, in training and in the score, in place of
                      the Gaussian: "laplace", or "discretised" (a Gaussian's mass over x ± 0.5
                      in the columns whose training values are all integers); "student-t" is
                      `vae train --likelihood student-t` (TrainConfig.likelihood), passed on
    noise: s          trained on rows with Gaussian noise of s standard deviations (of each
                      column in the training rows) added at every step: a smoothed density,
                      which cannot give one isolated row a peak of its own
    pooled: n         --contamination auto's cut taken over the last n training losses, not
                      over each batch's alone
    altbi: settings   trained as bench/altbi.py trains (ALTBI: growing batches, each batch's
                      worst losses left out, no early stopping), its last snapshots scored as
                      members of one mixture; settings override bench.altbi.DEFAULTS
    budget: m         m times the rule's epochs (about m × 3,000 optimizer steps, at most 900
                      epochs) on a table of 500 training rows or more, patience a tenth of them:
                      the rule's budget, not early stopping, ends most of those runs (digits' at
                      epoch 130, its best, with the validation loss still falling)
    trim_after: f     --contamination auto's cut taken only after the first f of the rule's
                      optimizer steps (a share of its budget) on a table of SMALL training rows
                      or more, the plain ELBO before: every clean mode is learned before any
                      row can be cut for being badly fitted
    clip: C           the encoder's standardized inputs clipped to ±C (the decoder's likelihood
                      still sees each cell as it is): a column nearly constant in training
                      gives a rare cell a hundred SDs, and one such validation row's latent
                      means grew to thousands (sylva, outside the development set)
    floor: F          the decoder's variance floor of a column whose training cells are all
                      integers (by default a unit step's rounding, 1/12 in its units) bounded by
                      min_x_logvar's, from below ("blunt") or above ("sharp"), or from below by
                      a number of min_x_logvar's units
    nu: v             Student's t with v degrees of freedom in place of STUDENT_T_NU's, in
                      training and in the score (the torch model's; bench scores in torch)
    samples: K        trained on the importance-weighted bound with K samples (Burda et al.
                      2015, arXiv:1509.00519) in place of the one-sample ELBO; early stopping
                      still watches the validation rows' -ELBO (its cells capped)

Every other option is the TrainConfig's. A model is scored as bench/protocols.py scores one.
"""

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from serving.core.scores import LIKELIHOODS, student_t_log_norm

KEYS = ("members", "bag", "transform", "steps", "likelihood", "refit", "samples", "noise",
        "pooled", "altbi", "budget", "trim_after", "clip", "floor", "nu")
SMALL_MODEL = {"latent_dim": 2, "hidden": (64, 64)}
LENGTHS = (150, 300, 600, 1200, None)  # None: the rule's length, with early stopping
SKEWED = 2.0


def fit_transform(kind: str, fit: np.ndarray):
    """The transform of the fit rows' columns, as a function of rows."""
    if kind == "rank-gauss":
        from sklearn.preprocessing import QuantileTransformer

        qt = QuantileTransformer(output_distribution="normal", random_state=0,
                                 n_quantiles=min(1000, len(fit))).fit(fit)
        return lambda x: qt.transform(x).astype(np.float32)
    if kind == "log":
        low = fit.min(0)
        centred = fit - fit.mean(0)
        skew = (centred**3).mean(0) / (fit.std(0) ** 3 + 1e-12)
        use = skew > SKEWED
        return lambda x: np.where(use, np.log1p(np.maximum(x - low, 0)), x).astype(np.float32)
    raise ValueError(f"transform {kind!r} is neither 'rank-gauss' nor 'log'")


def cell_log_density(kind: str, x, mean, logvar, integer):
    """log p(x | mean, logvar) of each cell (..., F) under the likelihood kind, in torch."""
    import torch

    r = (x - mean) * torch.exp(-0.5 * logvar)
    if kind == "laplace":  # scale sigma
        return -math.log(2.0) - 0.5 * logvar - r.abs()
    if kind == "discretised":
        normal = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
        mass = (normal.cdf(x + 0.5) - normal.cdf(x - 0.5)).clamp_min(1e-30).log()
        density = -0.5 * (math.log(2 * math.pi) + logvar + r * r)
        return torch.where(integer, mass, density)
    raise ValueError(f"likelihood {kind!r} is none of 'laplace', 'discretised'")


@contextlib.contextmanager
def _patched(name: str, replace, owner=None):
    """owner's attribute `name` (by default training.model.VAE's method) as replace(it) while
    inside, as it was after."""
    if owner is None:
        from training.model import VAE as owner

    original = getattr(owner, name)
    setattr(owner, name, replace(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def likelihood(kind: str | None, fit: np.ndarray):
    """VAE.log_px under the likelihood kind while inside (tables with no categorical
    column); its cells are never capped (auto judges the rows by their loss, and early
    stopping watches the plain validation -ELBO)."""
    if kind is None:
        return contextlib.nullcontext()
    import torch

    integer = torch.from_numpy(np.all(fit == np.round(fit), axis=0))

    def log_px(self, x, decoded, cap=None):
        if self.layout is None:
            return cell_log_density(kind, x, *decoded[:2], integer).sum(-1)
        if self.layout.levels:
            raise ValueError("the likelihood levers take numeric tables only")
        observed = ~torch.isnan(x[:, self.numeric])
        x = torch.where(observed, x[:, self.numeric], torch.zeros_like(decoded[0][0]))
        cells = cell_log_density(kind, x, *decoded[:2], integer[self.numeric])
        return torch.where(observed, cells, torch.zeros_like(cells)).sum(-1)

    return _patched("log_px", lambda _: log_px)


def importance_weighted(k: int | None):
    """VAE.loss as the negative IWAE bound with k samples (the step's own sample and k - 1
    more from torch's generator) while inside, for the training steps only (under no_grad,
    validation keeps the ELBO); beta weighs log p(z) - log q(z|x); auto judges the rows by
    their loss (no capped cells)."""
    if not k or k == 1:
        return contextlib.nullcontext()
    import torch

    from training.model import LossTerms

    def replace(original):
        def loss(self, x, eps, beta=1.0, cap=None):
            if not torch.is_grad_enabled():
                return original(self, x, eps, beta, cap)
            eps = torch.cat([eps, torch.randn(k - 1, *eps.shape[1:])])
            mu, logvar = self.encode(x)
            z = self.reparameterize(mu, logvar, eps)
            log_px = self.log_px(x, self.decode(z))  # (K, B)
            log_ratio = 0.5 * ((eps**2).sum(-1) - (z**2).sum(-1) + logvar.sum(-1))
            bound = torch.logsumexp(log_px + beta * log_ratio, 0) - math.log(k)
            kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)
            return LossTerms(-bound, -log_px.mean(0), kl)
        return loss

    return _patched("loss", replace)


def noisy(scale: float | None):
    """VAE.loss on rows plus N(0, (scale * the column's training SD)^2) noise drawn from
    torch's generator, for the training steps only (validation under no_grad sees the rows
    as they are), while inside (tables with no categorical column)."""
    if not scale:
        return contextlib.nullcontext()
    import torch

    def replace(original):
        def loss(self, x, eps, beta=1.0, cap=None):
            if self.layout is not None and self.layout.levels:
                raise ValueError("the noise lever takes numeric tables only")
            if torch.is_grad_enabled():
                x = x + scale * self.x_scale * torch.randn(x.shape)
            return original(self, x, eps, beta, cap)
        return loss

    return _patched("loss", replace)


def pooled_cut(rows: int | None):
    """--contamination auto with its cut (median + outlying robust SDs) taken over the last
    `rows` training losses, this batch's among them, not over the batch alone, while inside:
    a small table's batch holds 16 rows, too few for a steady median absolute deviation."""
    if not rows:
        return contextlib.nullcontext()
    import torch

    import training.loop

    recent: list[float] = []

    def replace(trimmed_mean):
        def pooled(loss, share, outlying=5.0, judged=None, weight=0.0):
            if share is not None:
                return trimmed_mean(loss, share, outlying)
            recent.extend((loss.detach() if judged is None else judged).tolist())
            del recent[:-rows]
            return trimmed_mean(loss, share, outlying, torch.tensor(recent), judged=judged,
                                weight=weight)
        return pooled

    return _patched("trimmed_mean", replace, training.loop)


def clipped_input(limit: float | None):
    """VAE.encoder_input clipped to ±limit while inside."""
    if not limit:
        return contextlib.nullcontext()

    def replace(original):
        def encoder_input(self, x):
            return original(self, x).clamp(-limit, limit)
        return encoder_input

    return _patched("encoder_input", replace)


def integer_floor(kind: str | float | None):
    """training.model.variance_floor's floor of a column whose training cells are all
    integers (a unit step's rounding, 1/12 in its units) bounded while inside: "blunt", never
    below min_x_logvar's; "sharp", never above it; a number L, never below L (in
    min_x_logvar's standardized units)."""
    if kind is None:
        return contextlib.nullcontext()
    if kind not in ("blunt", "sharp") and not isinstance(kind, float):
        raise ValueError(f"floor {kind!r} is none of 'blunt', 'sharp' or a number")
    import torch

    import training.model

    def replace(original):
        def variance_floor(config, std, integer):
            floor = original(config, std, integer)
            if kind == "blunt":
                return torch.maximum(floor, torch.full_like(std, config.min_x_logvar))
            if kind == "sharp":
                return torch.minimum(floor, torch.full_like(std, config.min_x_logvar))
            return torch.where(integer, floor.clamp_min(kind), floor) if integer is not None \
                else floor
        return variance_floor

    return _patched("variance_floor", replace, training.model)


def delayed_cut(steps: int | None):
    """--contamination auto's cut only after the first `steps` training batches while inside
    (the plain mean of their losses); a fixed share is trimmed as before."""
    if not steps:
        return contextlib.nullcontext()
    import training.loop

    seen = [0]

    def replace(trimmed_mean):
        def delayed(loss, share, outlying=5.0, judged=None, weight=0.0):
            if share is None and loss.requires_grad:
                seen[0] += 1
                if seen[0] <= steps:
                    return loss.mean()
            return trimmed_mean(loss, share, outlying, judged=judged, weight=weight)
        return delayed

    return _patched("trimmed_mean", replace, training.loop)


@contextlib.contextmanager
def degrees_of_freedom(nu: float | None):
    """training.model's Student's t with nu degrees of freedom while inside."""
    if nu is None:
        yield
        return
    from training import model

    with _patched("STUDENT_T_NU", lambda _: nu, model), \
            _patched("STUDENT_T_LOG_NORM", lambda _: student_t_log_norm(nu), model):
        yield


def _training_rows(n_rows: int) -> int:
    """The training rows of a table of n_rows, as `vae train` splits it."""
    from training.config import TrainConfig
    from training.data import split_rows

    return len(split_rows(n_rows, TrainConfig.val_fraction, 0)[0])


def _delay(n_rows: int, n_features: int, share: float | None) -> int | None:
    """The optimizer steps before auto's cut: `share` of the rule's budget, on a table of SMALL
    training rows or more (None: from the first step)."""
    from training.sizing import SMALL, rule

    n_train = _training_rows(n_rows)
    if share is None or n_train < SMALL:
        return None
    sizes = rule(n_train, n_features)
    return int(share * sizes["epochs"] * -(-n_train // sizes["batch_size"]))


def _length(options: dict, n_rows: int, n_features: int, steps: int | None) -> dict:
    """TrainConfig options that stop after about `steps` optimizer steps (None: the rule's)."""
    from training.config import TrainConfig
    from training.sizing import rule

    if steps is None:
        return options
    n_train = round(n_rows * (1 - TrainConfig.val_fraction))
    batch = options.get("batch_size") or rule(n_train, n_features)["batch_size"]
    epochs = max(2, -(-steps // -(-n_train // batch)))
    return {**options, "epochs": epochs, "warmup_epochs": max(1, epochs // 3),
            "patience": epochs}


def _budget(options: dict, n_rows: int, n_features: int, scale: float | None) -> dict:
    """TrainConfig options with `scale` times the rule's epochs on a table of SMALL training
    rows or more (None: the rule's)."""
    from training.sizing import SMALL, rule

    n_train = _training_rows(n_rows)
    if scale is None or n_train < SMALL:
        return options
    epochs = int(min(max(rule(n_train, n_features)["epochs"] * scale, 30), 900))
    return {**options, "epochs": epochs, "patience": max(10, epochs // 10)}


def separation(scores: np.ndarray) -> float:
    """How bimodal scores are: the distance between a two-component Gaussian mixture's means in
    units of its components' pooled standard deviation (the 1% tails clipped)."""
    from sklearn.mixture import GaussianMixture

    low, high = np.percentile(scores, [1, 99])
    s = np.clip(scores, low, high).reshape(-1, 1)
    gm = GaussianMixture(2, random_state=0).fit(s)
    return float(abs(np.diff(gm.means_.ravel())[0]) / math.sqrt(gm.covariances_.mean()))


def scores(task, options: dict, workdir: Path) -> tuple[np.ndarray, float]:
    """The task's scores under a recipe with levers, and the seconds its models took to train
    and score (bimodal: every length's)."""
    from bench.protocols import fitted_model, iwae_score

    options = dict(options)
    members, bag = options.pop("members", 1), options.pop("bag", None)
    transform, steps = options.pop("transform", None), options.pop("steps", None)
    kind, refit = options.pop("likelihood", None), options.pop("refit", None)
    if kind in LIKELIHOODS:  # vae train's own option
        kind, options["likelihood"] = None, kind
    samples, noise = options.pop("samples", None), options.pop("noise", None)
    pooled, altbi = options.pop("pooled", None), options.pop("altbi", None)
    budget, trim_after = options.pop("budget", None), options.pop("trim_after", None)
    clip, floor = options.pop("clip", None), options.pop("floor", None)
    nu = options.pop("nu", None)
    delay = _delay(len(task.fit), task.fit.shape[1], trim_after)
    options = _budget(options, len(task.fit), task.fit.shape[1], budget)
    lengths = LENGTHS if steps == "bimodal" else (steps,)
    fit, rows = task.fit, task.score
    if transform:
        apply = fit_transform(transform, fit)
        fit, rows = apply(fit), apply(rows)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if altbi is not None:
        from bench.altbi import snapshot_scores

        return _mixture(-snapshot_scores(fit, rows, task.seed, altbi)), \
            time.perf_counter() - started

    def fitted(own, own_options, seed, where):
        # the cut's levers keep state (recent losses, steps seen): each model starts afresh
        where.mkdir()
        with pooled_cut(pooled), delayed_cut(delay):
            return fitted_model(own, own_options, seed, where)

    with likelihood(kind, fit), importance_weighted(samples), noisy(noise), clipped_input(clip), \
            integer_floor(floor), degrees_of_freedom(nu):
        if refit:
            flagged = iwae_score(fitted(fit, SMALL_MODEL, task.seed, workdir / "flag"), fit)
            fit = fit[flagged <= np.quantile(flagged, 1 - refit)]
        per_member = []
        for m in range(members):
            rng = np.random.default_rng([task.seed, m])
            own = fit[rng.choice(len(fit), bag, replace=False)] if bag and bag < len(fit) \
                else fit
            by_length = []  # (separation of the training rows' scores, scores of rows)
            for i, length in enumerate(lengths):
                model = fitted(own, _length(options, len(own), own.shape[1], length),
                               task.seed + 1000 * m, workdir / f"m{m}-{i}")
                sep = separation(iwae_score(model, own)) if len(lengths) > 1 else 0.0
                by_length.append((sep, iwae_score(model, rows)))
            per_member.append(max(by_length, key=lambda pair: pair[0])[1])
    return _mixture(-np.stack(per_member)), time.perf_counter() - started


def _mixture(log_p: np.ndarray) -> np.ndarray:
    """The score of members whose log-likelihood estimates are log_p (M, rows): -log of their
    mean likelihood."""
    return -(np.logaddexp.reduce(log_p, axis=0) - math.log(len(log_p)))
