"""The one configuration of a training run; it is saved in every checkpoint and in model.pt.

The sizes left as None are chosen from the table's shape when training starts
(training.sizing), and the run saves the values it chose, so a resumed run uses the same.
"""

from dataclasses import asdict, dataclass

AUTO = "auto"


@dataclass
class TrainConfig:
    data: str = "digits"  # digits | breast-cancer | wine | iris | a .csv, .parquet or .npy path
    label_column: str | None = None  # a file's label column: train on its normal rows only
    # the label of the normal rows (serving.tables.labels' default: 0)
    normal_value: str | None = None
    # Overrides of what serving.tables.infer decides each column of a file is
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    epochs: int | None = None  # at most; early stopping may end the run sooner
    latent_dim: int | None = None
    hidden: tuple[int, ...] | None = None
    batch_size: int | None = None
    patience: int | None = None  # epochs without a better validation loss before stopping
    beta: float = 1.0  # weight of the KL term (Higgins et al. 2017); 1 is the ELBO
    warmup_epochs: int = 10  # KL weight rises linearly from 0 to beta over these epochs
    sampling: bool = True  # False: the ablation z = mu with penalty ½‖mu‖² in place of the KL
    # The share of each batch, by loss, left out of the gradient (a trimmed ELBO), so that the
    # few anomalies of an unlabelled table are not learned as normal: a fraction in [0, 0.5),
    # or "auto": the batch's outlying losses (training.objective.trimmed_mean). None: chosen
    # (training.sizing): "auto" at every size with the Student-t likelihood; with the
    # Gaussian's, "auto" for a small table, else 0 (on clean digits the Gaussian's auto left
    # the tail rows so badly fitted that the validation -ELBO went from 89 to 217 nats).
    contamination: float | str | None = None
    # auto's cut: robust standard deviations above the batch's median loss. None: chosen, 4
    # with the Student-t likelihood, 5 with the Gaussian's (docs/training.md).
    outlying: float | None = None
    # What auto judges a row by: its loss with no numeric cell counted further than this many
    # standard deviations off, so that one rare cell (ink in a pixel blank in most rows) does
    # not make a normal row outlying; the kept rows' loss is still the ELBO's. None: the loss.
    cell_cap: float | None = 4.0
    # The weight in auto's loss of the rows it judges outlying: 0 leaves them out; a small
    # weight keeps a normal tail row from growing so badly fitted that the validation loss
    # rises and ends the run, and an anomaly still counts for little.
    outlying_weight: float = 0.0
    # Early stopping's loss: the validation rows' -ELBO with no numeric cell counted further
    # than this many standard deviations off, so that a few cells the model has grown sure of
    # cannot end the run while the rest still improve; None: the plain -ELBO.
    val_cap: float | None = 4.0
    decoder_variance: str = "row"  # "row": predicted per row; "feature": one per feature
    # A numeric cell's density given z: "gaussian", or "student-t" (5 degrees of freedom, the
    # decoder's sd as its scale), whose log falls as the log of a residual, not its square, so
    # that no single cell dominates a row's score and no cap is needed (cell_cap and val_cap
    # then count for nothing). docs/training.md has what each scored.
    likelihood: str = "student-t"
    weight_decay: float = 0.0
    # Decay per step of the moving average of the weights that is validated and saved (Polyak
    # averaging; training.objective.WeightAverage); 0: the last step's weights.
    weight_average: float = 0.998
    seed: int = 0
    learning_rate: float | None = None  # chosen: 1e-3, scaled up with a large table's batch
    # Rows per epoch, a fresh random sample each epoch; None: chosen (a large table's step
    # budget, training.sizing), 0: every row
    epoch_rows: int | None = None
    val_fraction: float = 0.2
    # Floor of the decoder's log-variance, in normalized units: a feature's predicted sigma is
    # at least e^-1 of its training std. Lower floors let near-constant pixels dominate the
    # likelihood (digits hold-one-out AUROC 0.84 at -5, 0.89 at -2: bench/REPORT.md, measured
    # when every column had this floor).
    min_x_logvar: float = -2.0
    # A column whose training cells are all integers (counts, pixel intensities, ratings) gets
    # the floor of a unit step's rounding instead: variance 1/12 in its own units
    # (training.model.variance_floor; docs/training.md).
    integer_floor: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data.setdefault("contamination", 0.0)  # runs saved before the option trained untrimmed
        data.setdefault("weight_average", 0.0)  # and kept their last weights
        data.setdefault("learning_rate", 1e-3)  # runs saved before the rule chose it
        data.setdefault("epoch_rows", 0)  # and before epochs could be samples
        data.setdefault("cell_cap", None)  # and before auto's cut capped the cells
        data.setdefault("val_cap", None)  # and before early stopping did
        data.setdefault("integer_floor", False)  # and before integer columns had their floor
        data.setdefault("likelihood", "gaussian")  # and before the Student-t cell density
        data.setdefault("outlying", 5.0)
        for key in ("hidden", "numeric", "categorical", "ignore"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)
