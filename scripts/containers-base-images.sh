#!/usr/bin/env bash
# Builds, when missing, local stand-ins for the base images docker/Dockerfile.* and docker/compose.yaml
# name, tagged with those names, for a machine that reaches no image registry (the container tests):
#   docker.io/library/debian:bookworm-slim       mmdebstrap --variant=minbase bookworm (Debian's packages)
#   docker.io/library/golang:1.26-bookworm       that base + gcc, git, … + the host's Go toolchain and modules
#   gcr.io/distroless/static-debian12:nonroot    CA bundle, time zones and user 65532, nothing else
#   docker.io/library/postgres:15                that base + Debian's postgresql-15 + an entrypoint
# Uses podman with the caller's environment (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF). What differs from
# the official images: docs/containers.md. Run as root (mmdebstrap, rootful podman).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
images=$here/test/containers/images
go=${GO:-go}
goroot=$($go env GOROOT)
gover=$($go env GOVERSION)
label=org.iotauth.test-base

exists() { podman image exists "$1"; }
log() { echo "base image $1: $2" >&2; }

img=docker.io/library/debian:bookworm-slim
if ! exists "$img"; then
  log "$img" "mmdebstrap --variant=minbase bookworm"
  mmdebstrap --quiet --variant=minbase bookworm - \
    | podman import -q --change "LABEL $label=mmdebstrap" --change 'CMD ["bash"]' - "$img" >/dev/null
fi

img=docker.io/library/golang:1.26-bookworm
# Containers here reach the Go module proxy only through the host's TLS setup: the stand-in carries the
# modules go.sum names as a file-system module proxy (GOPROXY=file://…), made from the host's module
# cache (or the proxy, for what it lacks). It is rebuilt when the toolchain or go.sum changes.
sum=$(sha256sum "$here/go.sum" | cut -c1-16)
if ! exists "$img" || [[ $(podman image inspect --format "{{index .Labels \"$label.go\"}}" "$img") != "$gover-$sum" ]]; then
  log "$img" "Debian base + $goroot ($gover) + modules of go.sum $sum"
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp -a "$goroot" "$ctx/go"
  (cd "$here" && GOFLAGS= GOMODCACHE="$ctx/mod" \
    GOPROXY="file://$($go env GOMODCACHE)/cache/download,$($go env GOPROXY)" $go mod download)
  mv "$ctx/mod/cache/download" "$ctx/goproxy"
  chmod -R u+w "$ctx/mod" && rm -rf "$ctx/mod"
  podman build -q --label "$label.go=$gover-$sum" -f "$images/golang.Dockerfile" -t "$img" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

img=gcr.io/distroless/static-debian12:nonroot
if ! exists "$img"; then
  log "$img" "files from the Debian base"
  podman build -q --label "$label=distroless" -f "$images/distroless.Dockerfile" -t "$img" "$images" >/dev/null
fi

img=docker.io/library/postgres:15
if ! exists "$img"; then
  log "$img" "Debian base + postgresql-15"
  podman build -q --label "$label=postgres" -f "$images/postgres.Dockerfile" -t "$img" "$images" >/dev/null
fi
