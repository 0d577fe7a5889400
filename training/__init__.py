"""PyTorch training of the VAE: data loading, the model, the training loop and its plots; and
`VAE`, the detector as a scikit-learn estimator (training.estimator)."""


def __getattr__(name):  # `from training import VAE` without importing torch for other uses
    if name == "VAE":
        from training.estimator import VAE
        return VAE
    raise AttributeError(f"module 'training' has no attribute {name!r}")
