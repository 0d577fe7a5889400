"""Storing a bundle in the BentoML model store, so `bentoml build` and VAE_MODEL=vae:TAG find it."""

import shutil

import bentoml

from serving.core.bundle import GRAPH_FILES, MANIFEST_FILE, Bundle


def register(bundle: Bundle) -> str:
    """Copy the bundle into the model store as NAME:VERSION; the tag is returned. The version
    is a digest of everything that changes an answer (export.exporter.model_version), so a
    tag that exists already holds a bundle that answers the same: it is kept, never
    overwritten."""
    manifest = bundle.manifest
    tag = f"{manifest.name}:{manifest.version}"
    try:
        return str(bentoml.models.get(tag).tag)
    except bentoml.exceptions.NotFound:
        pass
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
