#!/usr/bin/env bash
# The local base image the container tests build on where Docker Hub is unreachable (the
# Dockerfile's PYTHON_IMAGE, and the stand-in Prometheus image's base): a minimal Debian made
# with debootstrap from this machine's own apt source, with python3 (`python`), its venv
# module, useradd, and this machine's CA certificates with a pip.conf that uses them, so pip
# works inside builds wherever it works on this machine. Built once; kept in podman's storage.
#
# It also makes podman run containers in sandboxes like CI's (no systemd, cgroup v1 hybrid,
# no raising of RLIMIT_NOFILE): only when a probe container fails, and only settings podman
# documents (containers.conf), written to /etc/containers/containers.conf.
#
# Usage: tests/deploy/base_image.sh IMAGE   (tests/run calls it as root)
set -euo pipefail
image="$1"

if ! podman image exists "$image"; then
    . /etc/os-release
    mirror=""
    for sources in /etc/apt/sources.list.d/*.sources; do
        [ -e "$sources" ] || continue
        mirror="$(sed -n 's/^URIs:[[:space:]]*\(\S*\).*/\1/p' "$sources" | head -n 1)"
        [ -n "$mirror" ] && break
    done
    if [ -z "$mirror" ]; then
        mirror="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(\S\+\).*/\2/p' \
            /etc/apt/sources.list 2>/dev/null | head -n 1)"
    fi
    [ -n "$mirror" ] || { echo "base_image.sh: no apt source found on this machine" >&2; exit 1; }
    work="$(mktemp -d /var/tmp/roost-base.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    echo "base_image.sh: debootstrap $VERSION_CODENAME from $mirror" >&2
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
        "$VERSION_CODENAME" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/rootfs/etc/pip.conf"
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    tar -C "$work/rootfs" -c . | podman import --quiet - "$image" >/dev/null
fi

if ! podman run --rm "$image" true 2>/dev/null; then
    conf=/etc/containers/containers.conf
    if [ -e "$conf" ]; then
        echo "base_image.sh: podman cannot run a container, and $conf exists: not changing it" >&2
        podman run --rm "$image" true
        exit 1
    fi
    echo "base_image.sh: podman cannot run containers here; writing $conf for this sandbox" >&2
    mkdir -p /etc/containers
    cat >"$conf" <<'CONF'
# Written by Roost's tests/deploy/base_image.sh: podman in a sandbox without systemd, on a
# cgroup v1/v2 hybrid (crun refuses it; runc does not), where RLIMIT_NOFILE cannot be raised.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
    podman run --rm "$image" true
fi
