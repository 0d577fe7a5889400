"""Storing a bundle in the BentoML model store, so `bentoml build` and VAE_MODEL=vae:TAG find it."""

import shutil

import bentoml

from serving.core.bundle import GRAPH_FILES, MANIFEST_FILE, Bundle


def register(bundle: Bundle) -> str:
    """Copy the bundle into the model store as NAME:VERSION; the tag is returned."""
    manifest = bundle.manifest
    tag = f"{manifest.name}:{manifest.version}"
    try:
        existing = bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        existing = None
    if existing is not None:
        if existing.info.metadata.get("sha256") == manifest.sha256:
            return str(existing.tag)
        bentoml.models.delete(tag)  # same weights, new calibration: the new bundle replaces it
    labels = {"framework": "onnxruntime", "dataset": manifest.training.dataset,
              "sampling": str(manifest.sampling).lower()}
    metadata = {"n_features": manifest.n_features, "latent_dim": manifest.latent_dim,
                "threshold": manifest.calibration.threshold,
                "target_fpr": manifest.calibration.target_fpr,
                "val_loss": manifest.training.val_loss, "created_at": manifest.created_at,
                "sha256": manifest.sha256}
    with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
        for name in (*GRAPH_FILES, MANIFEST_FILE):
            shutil.copy2(bundle.path / name, model.path_of(name))
    return str(model.tag)
