"""What `bentoml serve` imports (bentofile.yaml's `service`): the `vae` service built from the
VAE_* settings of the environment (serving/http/settings.py) and the bundle they name."""

from serving.http.assemble import build
from serving.http.settings import Settings

VAE = build(Settings.from_env())
