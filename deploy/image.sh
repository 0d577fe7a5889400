#!/usr/bin/env bash
# Build the service image from the bento: deploy/image.sh [TAG]   (as root, with podman)
#
# The base is a Debian bookworm made with debootstrap (built once, then reused), because no
# container registry may be reachable. BASE_IMAGE=python:3.11-slim deploy/image.sh uses your
# usual base instead. The model is the one registered as VAE_MODEL_TAG (vae:latest), so run
# `make model` first. The image runs `bentoml serve` as the non-root user bentoml on port 3000.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-localhost/vae-service:latest}
BASE=${BASE_IMAGE:-localhost/vae-base:bookworm}
MODEL=${VAE_MODEL_TAG:-vae:latest}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
export BENTOML_DO_NOT_TRACK=True
BIN=.venv/bin
RUNTIME_OPT=()
command -v runc >/dev/null && RUNTIME_OPT=(--opt runtime=runc)  # crun fails on some hosts

if [[ $BASE == localhost/vae-base:* ]] && ! podman image exists "$BASE"; then
  echo "building the base image $BASE with debootstrap (once, ~1 minute)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null
  # the host's CA bundle, so that installs inside the build trust the same TLS proxies it does
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rootfs" -c . | podman import \
    --change "ENV PIP_BREAK_SYSTEM_PACKAGES=1" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
    --change "ENV UV_NATIVE_TLS=true" - "$BASE" >/dev/null
fi

bentofile=$(mktemp --suffix .yaml)
{ cat bentofile.yaml; printf 'docker:\n  base_image: "%s"\n' "$BASE"; } > "$bentofile"
VAE_MODEL=$MODEL "$BIN/bentoml" build -f "$bentofile" --output tag > "$bentofile.tag"
bento=$(sed -n 's/^__tag__://p' "$bentofile.tag")
rm -f "$bentofile" "$bentofile.tag"
echo "built bento $bento on $BASE"
"$BIN/bentoml" containerize "$bento" --backend podman -t "$TAG" "${RUNTIME_OPT[@]}"
echo "built image $TAG"
