#!/usr/bin/env bash
# Build the service image from the bento: deploy/image.sh [TAG]   (as root, with podman)
#
#   MODEL=cc:latest deploy/image.sh    the model to bake in (default vae:latest; `make image MODEL=...`)
#
# The base is a Debian bookworm made with debootstrap (minbase, Python 3.11 and venv only; built
# once, then reused), because no container registry may be reachable. BASE_IMAGE=python:3.11-slim
# deploy/image.sh uses your usual base instead. The bento is built with the model registered as
# MODEL, and the image's VAE_MODEL names that model (its version, resolved here), so the image
# serves it by default. deploy/Containerfile.j2 installs only the serving requirements, with no
# compiler. The image runs `bentoml serve` as the non-root user bentoml on port 3000.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-localhost/vae-service:latest}
BASE=${BASE_IMAGE:-localhost/vae-base:bookworm-slim}
MODEL=${MODEL:-${VAE_MODEL_TAG:-vae:latest}}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
export BENTOML_DO_NOT_TRACK=True
BIN=.venv/bin
RUNTIME_OPT=()
command -v runc >/dev/null && RUNTIME_OPT=(--opt runtime=runc)  # crun fails on some hosts

# the tag with its version, so that the image names exactly the model it carries
MODEL=$("$BIN/python" -c 'import sys, bentoml; print(bentoml.models.get(sys.argv[1]).tag)' \
  "$MODEL" 2>/dev/null) || { echo "deploy/image.sh: model ${MODEL} is not in the BentoML model \
store; run vae export RUN_DIR --out DIR --register first (or make model)" >&2; exit 1; }

if [[ $BASE == localhost/vae-base:* ]] && ! podman image exists "$BASE"; then
  echo "building the base image $BASE with debootstrap (once, ~1 minute)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null
  # the host's CA bundle, so that installs inside the build trust the same TLS proxies it does
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" - "$BASE" >/dev/null
fi

bentofile=$(mktemp --suffix .yaml)
{ cat bentofile.yaml
  printf 'docker:\n  base_image: "%s"\n  dockerfile_template: "%s"\n' "$BASE" \
    "deploy/Containerfile.j2"
  printf 'envs:\n  - name: VAE_MODEL\n    value: "%s"\n' "$MODEL"; } > "$bentofile"
VAE_MODEL=$MODEL "$BIN/bentoml" build -f "$bentofile" --output tag > "$bentofile.tag"
bento=$(sed -n 's/^__tag__://p' "$bentofile.tag")
rm -f "$bentofile" "$bentofile.tag"
echo "built bento $bento with model $MODEL on $BASE"
# `bentoml containerize` copies the bento and its models into a temporary build context and
# renders the dockerfile_template there, but refuses a template outside the current directory
# (bentoml 1.4.40's resolve_user_filepath): its temporary directory is made under this one.
context=$(mktemp -d -p "$PWD" image-build.XXXXXX)
TMPDIR=$context "$BIN/bentoml" containerize "$bento" --backend podman -t "$TAG" \
  "${RUNTIME_OPT[@]}" >/dev/null || { rm -rf "$context"; exit 1; }
rm -rf "$context"
size=$(podman image inspect "$TAG" --format '{{.Size}}')
echo "built image $TAG serving $MODEL: $((size / 1000000)) MB"
