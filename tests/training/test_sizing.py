"""The sizes `vae train` chooses from a table's shape, and the contamination-robust loss."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from serving.core.rows import InputError
from tests.conftest import run_cli_here
from training.config import TrainConfig
from training.sizing import choose_sizes, rule
from training.objective import trimmed_mean
from training.train import load_run, train


@pytest.mark.parametrize("rows, features, expected", [
    (1438, 64, {"hidden": (256, 256), "latent_dim": 16, "batch_size": 64, "epochs": 130,
                "patience": 13, "contamination": 0.0}),  # digits' training rows
    # WDBC's benign training rows: a small table
    (290, 30, {"hidden": (128, 128), "latent_dim": 7, "batch_size": 36, "epochs": 33,
               "patience": 10, "contamination": "auto"}),
    (115, 13, {"hidden": (64, 64), "latent_dim": 3, "batch_size": 16, "epochs": 37,
               "patience": 10, "contamination": "auto"}),  # wine
    # the width 4·F rounded up: 132 becomes 256 (ionosphere's 33 columns), 128 stays
    (1000, 33, {"hidden": (256, 256), "latent_dim": 8, "batch_size": 64, "epochs": 187,
                "patience": 18, "contamination": 0.0}),
    (1000, 32, {"hidden": (128, 128), "latent_dim": 8, "batch_size": 64, "epochs": 187,
                "patience": 18, "contamination": 0.0}),
    (499, 4, {"hidden": (32, 32), "latent_dim": 2, "batch_size": 62, "epochs": 33,
              "patience": 10, "contamination": "auto"}),
    (500, 4, {"hidden": (32, 32), "latent_dim": 2, "batch_size": 62, "epochs": 300,
              "patience": 30, "contamination": 0.0}),
    # a large table: epochs of 500 sampled batches of 256, the learning rate scaled (issue 26)
    (200_000, 200, {"hidden": (256, 256), "latent_dim": 16, "batch_size": 256, "epochs": 30,
                    "patience": 10, "contamination": 0.0,
                    "learning_rate": 0.002, "epoch_rows": 128_000}),
    (100_000, 30, {"hidden": (128, 128), "latent_dim": 7, "batch_size": 64, "epochs": 30,
                   "patience": 10, "contamination": 0.0}),
])
def test_the_rule_fits_the_shape(rows, features, expected):
    """With the Gaussian likelihood (`--likelihood gaussian`): auto at 5 SDs on small tables."""
    expected = {"learning_rate": 1e-3, "epoch_rows": 0, "outlying": 5.0, **expected}
    assert rule(rows, features, "gaussian") == expected


@pytest.mark.parametrize("rows", [115, 499, 500, 1438, 200_000])
def test_the_student_t_default_trims_at_every_size_at_4_sds(rows):
    chosen = rule(rows, 30)
    assert (chosen["contamination"], chosen["outlying"]) == ("auto", 4.0)
    gaussian = rule(rows, 30, "gaussian")
    assert {k: v for k, v in chosen.items() if k not in ("contamination", "outlying")} == \
        {k: v for k, v in gaussian.items() if k not in ("contamination", "outlying")}


def test_given_sizes_are_kept_and_the_choice_is_said_in_one_line():
    config, line = choose_sizes(TrainConfig(hidden=(8, 8), epochs=5), 1438, 64)
    assert (config.hidden, config.epochs, config.latent_dim, config.batch_size) == \
        ((8, 8), 5, 16, 64)
    assert line == ("vae train: hidden 8,8, latent 16, batch 64, at most 5 epochs, patience 13, "
                    "beta 1, likelihood student-t, contamination auto at 4 robust SDs: chosen "
                    "for 1438 training rows × 64 features (hidden, epochs as given)")
    assert "\n" not in line


@pytest.mark.parametrize("beta", [None, -1.0, float("nan"), "4"])
def test_a_bad_beta_from_python_is_refused_in_one_line(beta):
    with pytest.raises(InputError, match=r"^beta .* is not a finite number ≥ 0 \(1 is the ELBO\)$"):
        choose_sizes(TrainConfig(beta=beta), 1438, 64)


def test_threads_follow_the_network_the_batch_and_the_free_cpus(monkeypatch):
    from serving.core.threads import container_cpus
    from training import sizing
    from training.sizing import choose_threads

    cpus = min(4, int(container_cpus()))
    monkeypatch.setattr(sizing.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # an idle machine
    assert choose_threads(TrainConfig(hidden=(64, 64), batch_size=64)) == 1
    assert choose_threads(TrainConfig(hidden=(256, 256), batch_size=64)) == cpus
    assert choose_threads(TrainConfig(hidden=(64, 64), batch_size=256)) == cpus  # a large table
    # issue 28: every core busy (`make serve` beside other work): one thread, not a wait
    busy = float(sizing.os.cpu_count())
    monkeypatch.setattr(sizing.os, "getloadavg", lambda: (busy, busy, busy))
    assert choose_threads(TrainConfig(hidden=(256, 256), batch_size=64)) == 1


def test_trimmed_mean_leaves_out_the_worst_rows():
    loss = torch_tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert trimmed_mean(loss, 0.0).item() == pytest.approx(22.0)
    assert trimmed_mean(loss, 0.2).item() == pytest.approx(2.5)
    assert trimmed_mean(loss, None).item() == pytest.approx(2.5)  # auto: 100 is outlying
    assert trimmed_mean(torch_tensor([1.0, 2.0, 3.0, 4.0]), None).item() == pytest.approx(2.5)


def test_auto_judges_a_row_on_its_capped_cells():
    """auto leaves out both a row with one cell far out (ink in a pixel blank elsewhere) and
    a row off in every cell when it judges their loss; judged on cells capped at cell_cap
    standard deviations (the default since runs saved it), only the second. The loss is still
    the ELBO's, uncapped. The Gaussian's cells only: a Student-t cell is never capped."""
    import torch

    from training.model import VAE

    torch.manual_seed(0)
    model = VAE(8, TrainConfig(hidden=(8,), latent_dim=2, likelihood="gaussian"))
    x, eps = torch.randn(16, 8), torch.randn(1, 16, 2)
    x[0, 3], x[1] = 40.0, 6.0  # row 0: one rare cell; row 1: off everywhere
    plain = model.loss(x, eps)
    assert plain.judged is None and trimmed_mean(plain.loss, None) == plain.loss[2:].mean()
    capped = model.loss(x, eps, cap=TrainConfig.cell_cap)
    torch.testing.assert_close(capped.loss, plain.loss)
    torch.testing.assert_close(trimmed_mean(capped.loss, None, judged=capped.judged),
                               torch.cat([capped.loss[:1], capped.loss[2:]]).mean())
    assert TrainConfig.from_dict({}).cell_cap is None  # a run saved before keeps its cut


def test_auto_can_weigh_its_outlying_rows_instead_of_leaving_them_out():
    loss = torch_tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert trimmed_mean(loss, None, weight=0.1).item() == pytest.approx((10.0 + 10.0) / 4.1)
    assert trimmed_mean(loss, None, weight=0.0) == trimmed_mean(loss, None) == loss[:4].mean()


@pytest.mark.parametrize("option, value", [("outlying_weight", 1.5), ("outlying_weight", -0.1),
                                           ("val_cap", 0.0), ("val_cap", "4")])
def test_the_robustness_options_are_checked(option, value):
    with pytest.raises(InputError, match=f"^{option} "):
        choose_sizes(TrainConfig(**{option: value}), 1000, 8)


def torch_tensor(values):
    import torch
    return torch.tensor(values)


def contaminated_table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 rows near a 2-D plane in 8-D, and 10% of rows in a tight cluster off the plane."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(300, 2)) @ rng.normal(size=(2, 8)) + 0.1 * rng.normal(size=(300, 8))
    anomalies = rng.normal(size=(33, 8)) * 0.1 + 2.5
    x = np.concatenate([normal, anomalies]).astype(np.float32)
    return x, np.arange(len(x)) >= len(normal)


def test_a_contaminated_fit_beats_the_plain_one(tmp_path):
    """Fitted on all rows, 10% of them anomalies, and scoring those rows: the trimmed loss
    (--contamination auto) ranks the anomalies higher than the plain ELBO does."""
    import torch

    x, anomalous = contaminated_table()
    np.save(tmp_path / "rows.npy", x)
    aurocs = {}
    for contamination in ("auto", 0.0):
        run = tmp_path / str(contamination)
        train(TrainConfig(data=str(tmp_path / "rows.npy"), contamination=contamination,
                          epochs=60), run, progress=False)
        model, _ = load_run(run)
        with torch.no_grad():
            eps = torch.randn(16, len(x), model.latent_dim,
                              generator=torch.Generator().manual_seed(0))
            scores = -model.loss(torch.from_numpy(x), eps).loss.numpy()  # -ELBO: higher normal
        aurocs[contamination] = roc_auc_score(anomalous, -scores)
    assert aurocs["auto"] > aurocs[0.0] and aurocs["auto"] > 0.99, aurocs


@pytest.mark.parametrize("value", ["abc", "0.5", "-0.1", "1", ""])
def test_bad_contamination_is_refused_in_one_line(tmp_path, value):
    result = run_cli_here("train", "--contamination", value, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert f"argument --contamination: {value!r} is neither auto nor a fraction in [0, 0.5)" \
        in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_bad_contamination_in_a_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="contamination 0.7 is neither 'auto' nor a fraction"):
        train(TrainConfig(contamination=0.7, epochs=1), tmp_path / "run", progress=False)


@pytest.mark.parametrize("flag, value, expected", [
    *(("--beta", v, "is not a finite number ≥ 0") for v in ("-1", "nan", "inf", "x")),
    *(("--weight-average", v, "is not a decay in [0, 1)") for v in ("1", "-0.1", "nan", "x"))])
def test_a_bad_beta_or_weight_average_is_refused_in_one_line(tmp_path, flag, value, expected):
    result = run_cli_here("train", flag, value, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert f"argument {flag}: {value!r} {expected}" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_bad_weight_average_in_a_config_is_refused(tmp_path):
    with pytest.raises(InputError, match="weight_average 1.0 is not a decay in"):
        train(TrainConfig(weight_average=1.0, epochs=1), tmp_path / "run", progress=False)
