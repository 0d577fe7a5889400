"""The `vae` command (vae_service.cli): the one module of the distribution that is neither
training, export nor serving, under a name of its own so that no generic top-level `cli`
module is installed."""
