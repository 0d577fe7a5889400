"""The report's reading of its own figures. Every number in it comes from the run; the claims
that depend on a comparison are worded from the comparison."""

import numpy as np

from bench import protocol_report, tasks
from bench.protocols import DEFAULT, GAUSSIAN, RECIPES
from bench.quality import METHODS

# No loss on the embedded sets (bench/REPORT.md before the real tables, at commit f417318):
# the unsupervised mean over section 1's eight data sets, and the digits hold-one-out at K = 16.
NO_LOSS = {"unsupervised": 0.924, "hold_one_out": 0.947}


def no_loss(name: str, value: float) -> bool:
    """Whether value, rounded to the three decimals the report prints, holds NO_LOSS[name]."""
    return round(value, 3) >= NO_LOSS[name]


# Multiply-accumulates per scored row of each network (weights of the linear layers; the
# default digits model: 64 → 256 → 256 → 2·16 and 16 → 256 → 256 → 2·64; PyOD's VAE defaults:
# 64 → 128 → 64 → 32 → 2·2 and 2 → 32 → 64 → 128 → 64).
OUR_ENCODER = 64 * 256 + 256 * 256 + 256 * 32
OUR_DECODER = 16 * 256 + 256 * 256 + 256 * 128
PYOD_VAE = (64 * 128 + 128 * 64 + 64 * 32 + 32 * 4) + (2 * 32 + 32 * 64 + 64 * 128 + 128 * 64)


def signed(x: float) -> str:
    """x to three places with its sign, and no "-0.000" for a change that rounds away."""
    return f"{round(x, 3) + 0.0:+.3f}"


def auroc(summary: dict, method: str) -> float:
    return float(np.mean(summary[method]["auroc"]))


def protocols_reading(p: dict) -> str:
    """The two protocols: where the default VAE stands against IsolationForest and ECOD, and
    what `--contamination auto` changes."""
    s = protocol_report.summary(p)
    unsupervised = s["unsupervised"]

    def mean(per, method):
        return float(np.mean(per[method]))
    wins = [d for d in unsupervised if mean(unsupervised[d], DEFAULT)
            >= max(mean(unsupervised[d], "IsolationForest"), mean(unsupervised[d], "ECOD"))]
    losses = [d for d in unsupervised if d not in wins]

    def gain(recipe: str) -> dict:  # the default's means less the recipe's
        return {proto: protocol_report.overall(p, DEFAULT, proto)
                - protocol_report.overall(p, recipe, proto) for proto in s}

    auto, averaged = gain(GAUSSIAN), gain("VAE, last weights, not averaged")
    best_peer = {d: max((m for m in unsupervised[d] if m not in RECIPES),
                        key=lambda m: mean(unsupervised[d], m)) for d in unsupervised}
    text = ("**Unlabelled data.** Fitted on rows with unlabelled anomalies and scoring them, "
            f"the default VAE matches or beats both IsolationForest and ECOD on "
            f"{len(wins)} of {len(unsupervised)} data sets ({', '.join(wins) or 'none'})")
    if losses:
        text += ("; it loses on " + ", ".join(
            f"{d} ({mean(unsupervised[d], DEFAULT):.3f} against IsolationForest "
            f"{mean(unsupervised[d], 'IsolationForest'):.3f} and ECOD "
            f"{mean(unsupervised[d], 'ECOD'):.3f}; best there: {best_peer[d]} "
            f"{mean(unsupervised[d], best_peer[d]):.3f})" for d in losses))
    text += (". Over all data sets its mean unsupervised AUROC is "
             f"{protocol_report.overall(p, DEFAULT, 'unsupervised'):.3f} (IsolationForest "
             f"{protocol_report.overall(p, 'IsolationForest', 'unsupervised'):.3f}, ECOD "
             f"{protocol_report.overall(p, 'ECOD', 'unsupervised'):.3f}, k-NN "
             f"{protocol_report.overall(p, 'k-NN distance (k = 5)', 'unsupervised'):.3f}), and "
             f"semi-supervised {protocol_report.overall(p, DEFAULT, 'semi-supervised'):.3f}. "
             f"The Student-t likelihood with `auto` (each batch's outlying losses left out) at "
             f"every size, the default after 02a5f47, moves the unsupervised mean by "
             f"{signed(auto['unsupervised'])} and the semi-supervised mean by "
             f"{signed(auto['semi-supervised'])} against the Gaussian defaults before it "
             f"(`--likelihood gaussian`: `auto` below 500 rows only); on clean rows its "
             f"trimming leaves some tail rows badly fitted (docs/training.md). The moving "
             f"average of the "
             f"weights that the default saves, against the last step's weights, moves them by "
             f"{signed(averaged['unsupervised'])} and {signed(averaged['semi-supervised'])}")
    text += "."
    if losses and all(d in tasks.TABLES for d in losses):
        text += (" Its losses are all on the small tables (100 to 400 rows), where a network "
                 "learns the few anomalies among the rows, and where methods that assume "
                 "little about the shape of the data do better; on the larger data sets "
                 "(digits and the synthetic mixture) it wins.")
    return text


def best_other(means: dict) -> str | None:
    """The recipe with the highest mean AUROC other than the defaults, if any was tried."""
    others = [r for r in means if r != DEFAULT]
    return max(others, key=means.get) if others else None


def _development(means: dict) -> str:
    """What the digits hold-one-out on the development seeds says of the defaults and the
    recipes tried against them."""
    default = means[DEFAULT]
    others = {r: v for r, v in means.items() if r != DEFAULT}
    best = best_other(means)
    text = f"On the development seeds the defaults score {default:.3f}"
    if best:
        text += (f"; the best of the {len(others)} recipes tried against them scores "
                 f"{others[best]:.3f} ({best}); above the defaults: "
                 f"{sum(v > default for v in others.values())} of the {len(others)}")
    return text + ". "


def reading(q: dict, a: dict, speed: dict, p: dict, development: dict) -> str:
    """The report's reading, every claim in it computed from the figures; development: the
    digits hold-one-out on the development seeds, {recipe: mean AUROC} (may be empty)."""
    digits, wdbc = q["digits"], q["wdbc"]
    k1, k16, k256 = (auroc(digits, f"VAE score, K = {k}") for k in (1, 16, 256))
    best_peer = max((m for m in METHODS if not m.startswith("VAE")),
                    key=lambda m: auroc(digits, m))
    spread = {k: np.mean(digits[f"VAE score, K = {k}"]["spread_other_seed"]) for k in (1, 16, 256)}
    pyod_spread = np.mean(digits["PyOD VAE"]["spread"])
    w16, w_pyod = auroc(wdbc, "VAE score, K = 16"), auroc(wdbc, "PyOD VAE")
    w_std = float(np.std(wdbc["VAE score, K = 16"]["auroc"]))
    w_range = [auroc(wdbc, m) for m in METHODS]
    plain = auroc(digits, "VAE --no-sampling")
    per_class, knn = q["per_class"]["VAE score, K = 16"], q["per_class"]["k-NN distance (k = 5)"]
    hardest = sorted(range(10), key=lambda c: per_class[c])[:3]
    repeatable = max(np.max(digits[m]["spread"]) for m in METHODS if m.startswith("VAE")) == 0

    def ab(key, column):
        return a[(key, column)]
    s, train = speed["scoring"], speed["training"]
    pyod = s["PyOD VAE decision_function (one sample)"]
    ours = {k: s[f"this runtime in-process, K = {k}"] for k in (1, 16)}
    eager = {k: s[f"PyTorch eager, same network, K = {k}"] for k in (1, 16)}
    width_speed = {w: {k: s[f"this runtime in-process, K = {k}"
                            + ("" if w == 256 else f", hidden {w},{w}")] / pyod for k in (1, 16)}
                   for w in (128, 256, 512)}
    served = {name.split(",")[0]: value / ours[16] for name, value in s.items()
              if name.startswith(("HTTP", "batch job"))}
    work = {k: (OUR_ENCODER + k * OUR_DECODER) / PYOD_VAE for k in (1, 16)}

    lines = ["## Reading", "", protocols_reading(p), "",
             "**Where it wins, trained clean.** "
             f"On digits with a class held out, this VAE's score (K = 16) has a mean AUROC of "
             f"{k16:.3f}, "
             + ("ahead of" if k16 > auroc(digits, best_peer) else "behind")
             + f" the best peer ({best_peer}, {auroc(digits, best_peer):.3f})"
             + f", and far above PyOD's VAE ({auroc(digits, 'PyOD VAE'):.3f}), ECOD "
             f"({auroc(digits, 'ECOD'):.3f}) and IsolationForest "
             f"({auroc(digits, 'IsolationForest'):.3f}). A likely reason is the score: PyOD's "
             "VAE (defaults: a 2-unit code, dropout) scores the Euclidean distance between the "
             "standardized row and one sampled reconstruction, while this score is a likelihood "
             "whose per-pixel variance the decoder predicts from the code, so ink where digits "
             "of that shape never have it costs more than ink where they vary. Scores are "
             + ("exactly repeatable with the same seed (spread 0 for every VAE row)"
                if repeatable else "NOT exactly repeatable with the same seed (see the table)")
             + f", while PyOD's VAE draws fresh noise on every call (spread {pyod_spread:.2g} "
             f"of its standard deviation here).", "",
             "**Where it loses.** "
             f"The digits target, no loss below {NO_LOSS['hold_one_out']} (it was 0.95 until the "
             f"real tables), is {'met' if no_loss('hold_one_out', k16) else 'missed'} "
             f"({k16:.3f}). "
             + (_development(development) if development else "")
             + "The hardest held-out classes for the VAE are "
             + ", ".join(f"{c} ({per_class[c]:.2f})" for c in hardest)
             + ", classes that k-NN finds hard too ("
             + ", ".join(f"{knn[c]:.2f}" for c in hardest)
             + "). On WDBC all methods lie "
             f"between {min(w_range):.3f} and {max(w_range):.3f}; the VAE "
             + ("leads" if w16 >= max(w_range) else "is among the best")
             + f" ({w16:.3f} vs PyOD's VAE {w_pyod:.3f}), but with about 6 malignant rows per "
             f"test set the margin is "
             + ("within" if abs(w16 - w_pyod) <= w_std else "more than")
             + f" one seed-to-seed standard deviation ({w_std:.3f}), "
             f"and the plain distance to the training mean scores "
             f"{auroc(wdbc, 'distance to training mean'):.3f}: malignant rows lie far from the "
             f"benign mean on WDBC's size features. Speed: in-process at K = 1 "
             f"the runtime scores {ours[1] / pyod:.1f}× the rows per second of PyOD's VAE "
             f"`decision_function` (target 5×) and at K = 16 {ours[16] / pyod:.2f}×, which is "
             f"{ours[16] / speed['gemm_roofline']['16']:.2f}× the rate that the network's own "
             f"fp32 matrix products allow on one core (the GEMM roofline). The default network "
             f"does {work[1]:.1f}× PyOD's arithmetic per row at K = 1 "
             f"and {work[16]:.0f}× at K = 16 (every sample runs the 256-wide decoder); per "
             f"multiply-add onnxruntime is about {ours[1] / pyod * work[1]:.0f}× faster than "
             f"PyOD's 32-row DataLoader loop, not enough to close a {work[16]:.0f}× gap. At "
             f"hidden 128,128 / 256,256 (the default) / 512,512 the in-process rate at K = 16 "
             f"is " + " / ".join(f"{width_speed[w][16]:.2f}×" for w in (128, 256, 512))
             + " PyOD's (K = 1: "
             + " / ".join(f"{width_speed[w][1]:.1f}×" for w in (128, 256, 512))
             + "), and `--hidden` lets a user choose. "
             f"Training the default model took {train['this VAE']['seconds']:.1f} s at best "
             f"({train['this VAE']['epochs']} epochs: the rule's step budget, or early stopping "
             f"on a validation split if sooner) "
             f"against {train['PyOD VAE']['seconds']:.1f} s at best for PyOD's VAE (a fixed "
             f"{train['PyOD VAE']['epochs']} epochs) on the same rows.",
             "", "**Sampling when scoring.** "
             f"K barely moves the ranking (AUROC {k1:.3f} at K = 1, {k16:.3f} at K = 16, "
             f"{k256:.3f} at K = 256) but it moves each row's score: scored again with another "
             f"seed, a row's score changes by up to {spread[1]:.1f} standard deviations at "
             f"K = 1, {spread[16]:.1f} at K = 16 and {spread[256]:.1f} at K = 256. A row near "
             f"the threshold can flip at K = 1; K = 16 is the default for that reason, and the "
             f"seed makes any answer replayable.", "",
             "**Why sample z = mu + sigma·eps at all?** "
             f"Not for detection alone: the deterministic code with the ½‖mu‖² penalty "
             f"(`--no-sampling`) reaches {plain:.3f} digits AUROC against {k16:.3f}, and "
             f"reconstructs test rows better (MSE {ab('reconstruction_mse', '--no-sampling'):.2f} "
             f"vs {ab('reconstruction_mse', 'VAE'):.2f}). What it loses is the generative model. "
             f"Without noise the penalty is evaded by shrinking the codes (RMS "
             f"{ab('code_rms', '--no-sampling'):.2f} against the prior's 1) and letting the "
             f"decoder scale them back up, so draws from N(0, I) land where no real row's code "
             f"is ({ab('prior_covered', '--no-sampling'):.1%} near one, against "
             f"{ab('prior_covered', 'VAE'):.1%} for the VAE) and decode to images "
             f"{ab('outside_range', '--no-sampling'):.0%} of whose pixels fall outside the pixel "
             f"range (VAE: {ab('outside_range', 'VAE'):.0%}); their Fréchet distance to real "
             f"rows is {ab('frechet_pca', '--no-sampling'):.0f} against the VAE's "
             f"{ab('frechet_pca', 'VAE'):.0f} (real rows against real rows: "
             f"{ab('frechet_pca', 'real rows'):.0f}). The plain autoencoder's codes spread "
             f"freely (RMS {ab('code_rms', 'plain autoencoder'):.2f}), and its samples are "
             f"blurs (classifier confidence {ab('confidence', 'plain autoencoder'):.2f}, "
             f"Fréchet {ab('frechet_pca', 'plain autoencoder'):.0f}). Sampling is what makes "
             f"the codes of real rows fill the prior (RMS {ab('code_rms', 'VAE'):.2f}, "
             f"{ab('active_units', 'VAE'):.0f} of 16 units active) so that `/sample` yields "
             f"digits, and it is what gives the score a meaning: only the VAE defines a density, "
             f"and its IWAE bound at K = 1000 ({ab('iwae_1000', 'VAE'):.1f} nats) is "
             f"{ab('neg_elbo', 'VAE') - ab('iwae_1000', 'VAE'):.1f} nats tighter than the ELBO. "
             f"Its samples are still blurry (classifier confidence "
             f"{ab('confidence', 'VAE'):.2f} against {ab('confidence', 'real rows'):.2f} for "
             f"real rows): a Gaussian decoder's mean averages over the strokes it is unsure of.",
             "", "**Serving costs little.** "
             + "; ".join(f"{name} {ratio:.0%}" for name, ratio in served.items())
             + " of the in-process rate at K = 16, on the same rows and cores (the HTTP figures "
             f"include the load generator). onnxruntime runs the same network "
             f"{ours[1] / eager[1]:.1f}× (K = 1) and {ours[16] / eager[16]:.1f}× (K = 16) as "
             f"fast as PyTorch eager mode, with the same noise and the same score maths.", "",
             "**Caveat.** The decoder's variance floor of a column that is not all integers "
             "(`min_x_logvar` = −2, was −5) was chosen from a sweep over four held-out classes "
             "of seed 0 of this same digits protocol (mean AUROC 0.84 at −5, 0.89 at −2 over "
             "those four); seeds 1 and 2 and the other six classes were not looked at for that "
             "choice. Digits' pixels are integers, so its models now have the integer columns' "
             "floor instead (a unit step's rounding), chosen on the development draws as the "
             "other defaults were. One change followed a look at this protocol's own runs, "
             "as the fix of a fault rather than a choice: with the weight average, the run of "
             "seed 1 with class 7 held out had stopped at epoch 22 with the model of epoch 2 "
             "(AUROC 0.77, at commit 7ee0120), picked from inside the KL warm-up; since then "
             "no epoch of the warm-up can be the best (docs/training.md).", ""]
    return "\n".join(lines)
