"""Request field types and response models of the HTTP API (the contract's table).

Numbers are strict: a string such as "1.5" is refused rather than converted. The limits come
from the service's settings (serving.http.settings) and appear in its OpenAPI page.
"""

from typing import Annotated

from pydantic import BaseModel, Field, Strict, model_serializer

from serving.core.noise import MAX_SEED
from serving.http.settings import Settings

Number = Annotated[float, Strict()]
Cell = Annotated[float, Strict()] | Annotated[str, Field(max_length=1000)] | None
Seed = Annotated[Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)] | None, Field(
    description="seed of the noise; null picks a fresh one, which the answer returns",
    examples=[1])]
Temperature = Annotated[float, Strict(), Field(ge=0.0, le=100.0, allow_inf_nan=False,
                                               description="scale of z ~ N(0, I)",
                                               examples=[1.0])]
Explain = Annotated[bool, Strict(), Field(description="add feature_nll, each feature's share of "
                                            "recon_nll, and feature_excess, its excess over "
                                            "the validation median", examples=[False])]


def rows_of(width: int | None, missing: bool = False) -> type:
    """A row of `width` numbers (null for a missing cell, with `missing`): the width is stated
    in the OpenAPI schema (so generated requests are meaningful) but checked by check_rows,
    whose message names the model field."""
    cell = Number | None if missing else Number
    if width is None:
        return list[cell]
    return Annotated[list[cell], Field(json_schema_extra={"minItems": width,
                                                          "maxItems": width})]


def example_row(width: int) -> list[float]:
    """A digit's pixels for the 64-feature digits model; zeros for any other width."""
    digit = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8
    return digit if width == 64 else [0.0] * width


class RequestTypes:
    """The request field types under one service's limits and one model's widths (they show
    in the OpenAPI page)."""

    def __init__(self, settings: Settings, n_features: int | None = None,
                 latent_dim: int | None = None, missing: bool = False):
        self.settings = settings
        self.Rows = Annotated[list[rows_of(n_features, missing)] | None, Field(
            description=f"rows of n_features numbers in raw feature units (at most "
                        f"{settings.max_rows})" + ("; null for a missing cell" if missing
                                                     else ""),
            examples=[[example_row(n_features or 64)]])]
        self.Records = Annotated[list[dict[str, Cell]] | None, Field(
            description="rows as objects keyed by column name (numbers, text, null or absent "
                        "for a missing cell), for a model with a column schema: in place of x",
            examples=[None])]
        self.Draws = Annotated[int, Strict(), Field(
            ge=0, le=100, description="0: the expected value of each missing cell; N: N "
                                      "multiple imputations", examples=[0])]
        self.Latents = Annotated[list[rows_of(latent_dim)], Field(
            description="latent codes, each of latent_dim numbers",
            examples=[[[0.0] * (latent_dim or 16)]])]
        self.SampleCount = Annotated[int, Strict(), Field(
            ge=1, le=settings.max_sample_n, description="how many rows to sample",
            examples=[4])]

    def samples(self, least: int) -> type:
        return Annotated[int, Strict(), Field(ge=least, le=self.settings.max_samples,
                                              description="n_samples K of z per row",
                                              examples=[16])]


class Answer(BaseModel):
    model_version: str

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):
        """Optional parts (z without n_samples, feature_nll without explain) are left out."""
        return {k: v for k, v in handler(self).items() if v is not None}


class Seeded(Answer):
    seed: int


class EncodeAnswer(Seeded):
    mu: list[list[float]]
    logvar: list[list[float]]
    z: list[list[list[float]]] | None = Field(None, description="[n_samples][batch][latent]")


class DecodeAnswer(Answer):
    x_mean: list[list[float]]
    x_logvar: list[list[float]]


class SampleAnswer(Seeded):
    x: list[list[float]] | None = Field(None, description="decoder means of the sampled codes")
    records: list[dict] | None = Field(None, description="with categorical columns: the rows "
                                                         "as records, each level the most "
                                                         "likely")
    z: list[list[float]]


class ReconstructAnswer(Seeded):
    x_mean: list[list[float]] | None = None
    records: list[dict] | None = Field(None, description="with categorical columns: each "
                                                         "column's mean or most likely level")
    probability: list[dict[str, float]] | None = Field(
        None, description="each categorical column's most likely level's probability")


class ImputeAnswer(Seeded):
    x: list | None = Field(None, description="rows with missing cells filled; with draws, "
                                             "[draws][rows][features]")
    records: list | None = Field(None, description="as records, when sent as records")


class ScoreAnswer(Seeded):
    score: list[float] = Field(description="-log p(x), importance-weighted, nats")
    recon_nll: list[float]
    kl: list[float]
    percentile: list[float]
    is_anomaly: list[bool]
    threshold: float = Field(description="the threshold of complete rows; a row with "
                                         "missing cells is judged at its observed count")
    observed: list[int] | None = Field(None, description="cells observed in each row")
    feature_nll: list[list[float]] | None = None
    feature_excess: list[list[float]] | None = Field(
        None, description="with explain: feature_nll minus the feature's median over the "
                          "validation rows; the largest names the feature that is most "
                          "unusual for this model, whatever its scale")
