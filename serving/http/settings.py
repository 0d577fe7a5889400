"""Service settings from the environment, read once when the service starts, each checked with
a one-line error."""

import os
from dataclasses import dataclass, fields

from serving.core.threads import container_cpus


@dataclass(frozen=True)
class Settings:
    model: str = "vae:latest"  # VAE_MODEL: a model-store tag or a bundle directory
    workers: int = 1  # VAE_WORKERS: processes serving HTTP, each with its own graph sessions
    ort_threads: int = 1  # VAE_ORT_THREADS: threads per worker scoring chunks side by side;
    # unset, the CPUs of the container (its cgroup limit) shared among the workers
    max_rows: int = 10_000  # VAE_MAX_ROWS: rows per JSON request
    max_samples: int = 1024  # VAE_MAX_SAMPLES: n_samples per request
    max_sample_n: int = 10_000  # VAE_MAX_SAMPLE_N: n of /sample
    max_row_samples: int = 1 << 18  # VAE_MAX_ROW_SAMPLES: rows × n_samples per request (and
    # per graph call of an upload): what bounds a request's noise, graph work and answer
    max_file_rows: int = 1_000_000  # VAE_MAX_FILE_ROWS: rows per uploaded file (larger files
    # belong to `vae score`)
    max_json_bytes: int = 64 << 20  # VAE_MAX_JSON_BYTES: body of a JSON request
    max_file_bytes: int = 256 << 20  # VAE_MAX_FILE_BYTES: body of a file upload (BentoML
    # holds an upload in memory: 1 GiB took a worker to 1.2 GB)
    max_uploads: int = 2  # VAE_MAX_UPLOADS: uploads taken in at once per worker (503 beyond)
    max_inflight_bytes: int = 128 << 20  # VAE_MAX_INFLIGHT_BYTES: JSON bodies being read at
    # once per worker (503 beyond; one body alone is always read)
    max_inflight_row_samples: int = 1 << 19  # VAE_MAX_INFLIGHT_ROW_SAMPLES: graph work in
    # flight per worker; a request waits for its share
    merge_max_rows: int = 4096  # VAE_MERGE_MAX_ROWS: rows of concurrent requests merged
    # into one graph call (a larger request runs alone)
    file_chunk_rows: int = 8192  # VAE_FILE_CHUNK_ROWS: rows per graph call for files
    timeout: int = 120  # VAE_TIMEOUT: seconds a request may take
    header_timeout: int = 10  # VAE_HEADER_TIMEOUT: seconds for a request's headers to arrive
    # (on a new connection, or after the last answer on a kept-alive one)
    body_timeout: int = 60  # VAE_BODY_TIMEOUT: seconds for a request's body to arrive

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for field in fields(cls):
            name = f"VAE_{field.name.upper()}"
            if name not in env:
                continue
            if field.type is str or field.type == "str":
                values[field.name] = env[name]
                continue
            text = env[name].strip()
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{name}={env[name]!r} is not a positive integer")
            values[field.name] = int(text)
        if "ort_threads" not in values:
            values["ort_threads"] = max(1, int(container_cpus()) // values.get("workers",
                                                                              cls.workers))
        return cls(**values)
