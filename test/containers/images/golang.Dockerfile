# Test stand-in for golang:1.26-bookworm (no image registry is reachable where the tests run): the local
# Debian base, the build tools the official image carries, the host's Go toolchain (context: go/) and the
# modules of the repository's go.sum as a file-system module proxy (context: goproxy/), so that
# `go mod download` in docker/Dockerfile.* needs no network.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl git gcc libc6-dev make pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY go/ /usr/local/go/
COPY goproxy/ /usr/local/share/goproxy/
ENV GOPATH=/go GOTOOLCHAIN=local GOPROXY=file:///usr/local/share/goproxy \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
