"""Request field types and response models of the HTTP API (SPEC.md's table).

Numbers are strict: a string such as "1.5" is refused rather than converted. The limits come
from the environment (serving.http.settings) and appear in the OpenAPI page at /docs.
"""

from typing import Annotated

from pydantic import BaseModel, Field, Strict, model_serializer

from serving.core.noise import MAX_SEED
from serving.http.settings import SETTINGS

Number = Annotated[float, Strict()]
Rows = Annotated[list[list[Number]], Field(
    description=f"rows of n_features numbers in raw feature units (at most {SETTINGS.max_rows})",
    examples=[[[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8]])]
Latents = Annotated[list[list[Number]], Field(
    description="latent codes, each of latent_dim numbers", examples=[[[0.0] * 16]])]
Seed = Annotated[Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)] | None, Field(
    description="seed of the noise; null picks a fresh one, which the answer returns")]


def samples(least: int) -> type:
    return Annotated[int, Strict(), Field(ge=least, le=SETTINGS.max_samples,
                                          description="n_samples K of z per row")]


Temperature = Annotated[float, Strict(), Field(ge=0.0, le=100.0, allow_inf_nan=False,
                                               description="scale of z ~ N(0, I)")]
SampleCount = Annotated[int, Strict(), Field(ge=1, le=SETTINGS.max_sample_n)]


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
    x: list[list[float]] = Field(description="decoder means of the sampled codes")
    z: list[list[float]]


class ReconstructAnswer(Seeded):
    x_mean: list[list[float]]


class ScoreAnswer(Seeded):
    score: list[float] = Field(description="-log p(x), importance-weighted, nats")
    recon_nll: list[float]
    kl: list[float]
    percentile: list[float]
    is_anomaly: list[bool]
    threshold: float
    feature_nll: list[list[float]] | None = None
