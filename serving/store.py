"""Where a model reference points: a bundle directory, or a tag of the BentoML model store."""

import os
from pathlib import Path

from serving.core.bundle import BundleError, load_bundle
from serving.core.runtime import VAERuntime
from serving.framework.bento import packaged_model


def is_model_tag(ref: str | os.PathLike) -> bool:
    """Whether ref names a model-store tag (vae, vae:latest) rather than a path."""
    return not Path(ref).exists() and "/" not in str(ref) and os.sep not in str(ref)


def locate_bundle(ref: str | os.PathLike) -> Path:
    """A bundle directory, or a BentoML model-store tag such as `vae:latest`, as a directory."""
    path = Path(ref)
    if path.is_dir():
        return path
    ref = str(ref)
    if not is_model_tag(ref):
        raise BundleError(f"model {ref!r} is not a bundle directory; expected a directory "
                          f"written by `vae export` or a model-store tag such as vae:latest")
    packaged = packaged_model(ref)
    if packaged is not None:
        return packaged
    import bentoml  # only needed for tags; importing it costs about a second
    try:
        return Path(bentoml.models.get(ref).path)
    except bentoml.exceptions.NotFound:
        raise BundleError(f"model {ref!r} is neither a bundle directory nor a tag in the BentoML "
                          f"model store; run `vae export RUN_DIR --out DIR --register` first, or "
                          f"see `bentoml models list`") from None
    except (ValueError, bentoml.exceptions.BentoMLException) as e:
        raise BundleError(f"model {ref!r} is not a valid model-store tag ({e}); expected NAME or "
                          f"NAME:VERSION such as vae:latest, or a bundle directory") from None


def load_runtime(model: str | os.PathLike, threads: int | None = None) -> VAERuntime:
    """A runtime from a bundle directory or a model-store tag such as `vae:latest`."""
    return VAERuntime(load_bundle(locate_bundle(model)), threads)
