#!/usr/bin/env bash
# Build the hsi-pipeline image (Dockerfile) and run a flow inside it as the ECS work pool would.
#
#   scripts/image.sh build     make the base if missing, build hsi-pipeline:<version> (default)
#   scripts/image.sh base      only the base: localhost/hsi-base:bookworm (Debian 12, python3, venv)
#   scripts/image.sh check     run a demo flow run in the image against the local stack (needs `hsi stack up`):
#       flock /work/stack.lock bash -c '.venv/bin/hsi stack up && scripts/image.sh check; .venv/bin/hsi stack down'
#
# Environment:
#   HSI_IMAGE_BASE   base image (default localhost/hsi-base:bookworm, made here with mmdebstrap; with a
#                    registry: HSI_IMAGE_BASE=python:3.11-slim, nothing is made)
#   HSI_PODMAN_GLOBAL_FLAGS / HSI_PODMAN_RUN_FLAGS   podman flags this machine needs (defaults below)
#   HSI_IMAGE_CA     CA bundle pip trusts during the build (default /etc/ssl/certs/ca-certificates.crt
#                    when present: needed behind a TLS-intercepting proxy; never copied into the image)
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-build}
BASE=${HSI_IMAGE_BASE:-localhost/hsi-base:bookworm}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
[[ -n $VERSION ]] || { echo "image: no version = \"...\" in pyproject.toml" >&2; exit 1; }
TAG=hsi-pipeline:$VERSION
# runc: crun fails here (cgroups hybrid mode); ulimits within the host's hard limits: podman's defaults
# fail with "setrlimit ... Operation not permitted"
export HSI_PODMAN_GLOBAL_FLAGS=${HSI_PODMAN_GLOBAL_FLAGS:---runtime runc}
export HSI_PODMAN_RUN_FLAGS=${HSI_PODMAN_RUN_FLAGS:---ulimit nofile=1024:1024 --ulimit nproc=1024:1024}
read -r -a G <<<"$HSI_PODMAN_GLOBAL_FLAGS"
read -r -a R <<<"$HSI_PODMAN_RUN_FLAGS"

die() { echo "image: $*" >&2; exit 1; }
last_line() { grep -v '^\s*$' | tail -n 1; }

# which container tool can build and run here: podman (with the flags above) or a docker daemon
engine() {
    if command -v podman >/dev/null; then
        local out
        if out=$(podman "${G[@]}" info 2>&1 >/dev/null); then echo podman; return; fi
        die "podman cannot run: $(last_line <<<"$out")"
    fi
    if command -v docker >/dev/null; then
        local out
        if out=$(docker info 2>&1 >/dev/null); then echo docker; return; fi
        die "no container tool can run: podman is not installed; docker: $(last_line <<<"$out")"
    fi
    die "no container tool: install podman (apt-get install -y podman) or Docker"
}

make_base() {
    local tool=$1
    if [[ $BASE != localhost/hsi-base:* ]]; then return; fi  # a registry base: pulled by the build
    if $tool image exists "$BASE" 2>/dev/null || $tool image inspect "$BASE" >/dev/null 2>&1; then
        echo "base $BASE present"
        return
    fi
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing: apt-get install -y mmdebstrap (makes the Debian 12 base $BASE)"
    local tmp
    tmp=$(mktemp -d /tmp/hsi-base.XXXXXX)
    trap 'rm -rf "$tmp"' RETURN
    echo "base: mmdebstrap bookworm (python3, python3-venv) -> $BASE (a few minutes)..."
    local t0=$SECONDS
    mmdebstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$tmp/base.tar" http://deb.debian.org/debian >"$tmp/mmdebstrap.log" 2>&1 \
        || die "mmdebstrap failed: $(last_line <"$tmp/mmdebstrap.log")"
    $tool import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tmp/base.tar" "$BASE" >/dev/null \
        || die "$tool import of the base failed"
    echo "base $BASE made in $((SECONDS - t0)) s"
}

# a trivial container with the flags above: fails with the runtime's own reason (crun: "cgroups in
# hybrid mode not supported"; default ulimits: "setrlimit ... operation not permitted")
probe() {
    local tool=$1 image=$2 out
    $tool image exists "$image" 2>/dev/null || return 0  # a registry base: the build pulls it
    if [[ $tool == podman ]]; then
        out=$(podman "${G[@]}" run --rm "${R[@]}" "$image" true 2>&1) || die "podman cannot run a container: $(last_line <<<"$out")"
    fi
}

# the first line that says why a build failed (pip's ERROR, the runtime's error), else the last Error
build_error() {
    grep -m1 -E '^ERROR: |error running container|OCI runtime' "$1" || grep -E '^Error' "$1" | tail -n 1 || last_line <"$1"
}

build() {
    local tool
    tool=$(engine)
    make_base "$tool"
    probe "$tool" "$BASE"
    local ca=${HSI_IMAGE_CA:-/etc/ssl/certs/ca-certificates.crt}
    local args=(build --network host --build-arg "BASE=$BASE" -t "$TAG" .)
    if [[ -f $ca ]]; then
        args=(build --network host -v "$ca:/run/hsi-build-ca.crt:ro" --build-arg PIP_CERT=/run/hsi-build-ca.crt
              --build-arg "BASE=$BASE" -t "$TAG" .)
    fi
    local log
    log=$(mktemp /tmp/hsi-image-build.XXXXXX.log)
    echo "build: $TAG from $BASE with $tool (log: $log)..."
    local t0=$SECONDS
    if [[ $tool == podman ]]; then
        podman "${G[@]}" "${args[0]}" "${R[@]}" "${args[@]:1}" >"$log" 2>&1 || die "build failed: $(build_error "$log")"
    else
        docker "${args[@]}" >"$log" 2>&1 || die "build failed: $(build_error "$log")"
    fi
    local secs=$((SECONDS - t0)) size
    size=$($tool image inspect "$TAG" --format '{{.Size}}')
    echo "built $TAG in ${secs} s, $((size / 1000000)) MB"
    # the image answers as the ECS task would start it: the CLI on PATH, sources in the working dir
    if [[ $tool == podman ]]; then
        podman "${G[@]}" run --rm "${R[@]}" "$TAG" python -c \
            "import os, hsi, hsi_pipeline.flows.demo, prefect_aws; print('smoke:', os.getcwd(), prefect_aws.__version__)"
    fi
}

case $cmd in
    base) make_base "$(engine)" ;;
    build) build ;;
    check)
        [[ -x .venv/bin/python ]] || die ".venv missing: bash scripts/setup.sh"
        [[ -f hsi.stack.yaml ]] || die "hsi.stack.yaml missing: run .venv/bin/hsi stack up first (under flock /work/stack.lock)"
        engine >/dev/null
        .venv/bin/python -m hsi_pipeline.deployments.ecs.local_run --stack-config hsi.stack.yaml --image "localhost/$TAG"
        ;;
    *) die "unknown command '$cmd': use build, base or check (e.g. scripts/image.sh build)" ;;
esac
