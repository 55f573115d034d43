# Shared by scripts/demo and scripts/test: install what is missing, nothing more.
# shellcheck shell=bash

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO_DIR/.venv"

say() { printf '%s\n' "hub-sidecars: $*" >&2; }

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        say "run this as root: it creates real accounts (under a scratch --prefix directory)"
        exit 2
    fi
}

# install_apt_packages COMMAND:PACKAGE ... installs PACKAGE when COMMAND is not on PATH.
# The pseudo-command "python-venv" stands for a python3 able to create virtual envs, and
# "static-busybox" for a statically linked busybox (the tests' Docker image holds only that
# binary; Debian's plain busybox, which initramfs-tools often pulls in, needs libc).
install_apt_packages() {
    local wanted=() pair command package
    for pair in "$@"; do
        command=${pair%%:*}
        package=${pair#*:}
        if [ "$command" = python-venv ]; then
            python3 -c 'import ensurepip, venv' 2>/dev/null || wanted+=("$package")
        elif [ "$command" = static-busybox ]; then
            dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" ||
                wanted+=("$package")
        elif ! PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1; then
            wanted+=("$package")
        fi
    done
    [ ${#wanted[@]} -eq 0 ] && return 0
    say "installing Debian packages: ${wanted[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages such as openssh-server and docker.io start their daemon on a host booted with
    # systemd; the tests start their own on loopback. A policy-rc.d that says "no" (exit 101)
    # keeps the host's services as they were, unless the admin has a policy of their own.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# hub-sidecars: no service starts while its packages install\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        ours=1
    fi
    local status=0
    apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null || status=$?
    [ -n "$ours" ] && rm -f "$policy"
    return "$status"
}

# ensure_venv EXTRAS: .venv with the suite installed (editable) plus the given extras ("" or "test").
ensure_venv() {
    local extras=$1 spec="$REPO_DIR" stamp
    [ -n "$extras" ] && spec="$REPO_DIR[$extras]"
    stamp="$VENV/.installed-${extras:-base}"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(sha256sum "$REPO_DIR/pyproject.toml")" ]; then
        say "installing Python packages into $VENV"
        local log
        log=$(mktemp)
        if ! "$VENV/bin/python" -m pip install -q -e "$spec" >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            say "pip install failed"
            exit 1
        fi
        rm -f "$log"
        sha256sum "$REPO_DIR/pyproject.toml" >"$stamp"
    fi
}

# ensure_proxy: configurable-http-proxy for the real-JupyterHub tests, from package-lock.json.
ensure_proxy() {
    if [ ! -x "$REPO_DIR/node_modules/.bin/configurable-http-proxy" ]; then
        say "installing configurable-http-proxy (npm)"
        (cd "$REPO_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

DOCKER_SPAWNERS=("dockerspawner==14.0.0" "jhub-swarmspawner==0.6.3")

# ensure_hub_venv MAJOR: .venv-hubMAJOR with JupyterHub MAJOR.x and jupyter-server, for the tests
# that run the hub API client against older hubs (.venv has the newest JupyterHub). Installs only
# when the venv is missing or was built from a different requirement list.
ensure_hub_venv() {
    local major=$1 venv="$REPO_DIR/.venv-hub$1" stamp
    local wanted=("jupyterhub>=$major.0,<$((major + 1))" "jupyter-server>=2.14,<3")
    # The Docker spawners the culler and stats are tested with (realparts/swarm.py runs
    # hubs with them on a swarm of the test's own); jhub-swarmspawner needs JupyterHub > 5.1.
    [ "$major" = 5 ] && wanted+=("${DOCKER_SPAWNERS[@]}")
    stamp="$venv/.installed"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${wanted[*]}" ]; then
        return 0
    fi
    say "creating $venv (JupyterHub $major.x)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    local log
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install -q "${wanted[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "pip install into $venv failed"
        exit 1
    fi
    rm -f "$log"
    printf '%s' "${wanted[*]}" >"$stamp"
}

# duplicity 3.x for hub-backup, without the cloud SDKs a plain `pip install duplicity` pulls
# (366 MB): the first installed with --no-deps, the others with theirs: what the file://
# (fasteners) and sftp:// (paramiko) backends need. Not a pyproject dependency for that reason.
# Needs gpg (Debian gnupg).
DUPLICITY_PACKAGES=("duplicity==3.2.1" "fasteners" "paramiko")

# ensure_duplicity [VENV [PIP_OPTION...]]: DUPLICITY_PACKAGES in VENV (default .venv). The
# PIP_OPTIONs go to both pip calls (scripts/install --wheels: --no-index --find-links DIR).
ensure_duplicity() {
    local venv=${1:-$VENV}
    [ $# -gt 0 ] && shift
    local wanted=("${DUPLICITY_PACKAGES[@]}") stamp="$venv/.installed-duplicity"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${wanted[*]}" ] &&
        [ -x "$venv/bin/duplicity" ]; then
        return 0
    fi
    say "installing duplicity into $venv (no cloud SDKs)"
    local log
    log=$(mktemp)
    if ! { "$venv/bin/python" -m pip install -q "$@" --no-deps "${wanted[0]}" &&
        "$venv/bin/python" -m pip install -q "$@" "${wanted[@]:1}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "pip install of duplicity failed"
        exit 1
    fi
    rm -f "$log"
    printf '%s' "${wanted[*]}" >"$stamp"
}

# duplicity_wheels DIR: the wheels ensure_duplicity installs, into DIR, for an offline
# `scripts/install --wheels DIR` (beside `pip wheel -w DIR .`).
duplicity_wheels() {
    local dir=${1:?duplicity_wheels needs a directory} python=${PYTHON:-$VENV/bin/python}
    "$python" -m pip download -q --no-deps -d "$dir" "${DUPLICITY_PACKAGES[0]}" &&
        "$python" -m pip wheel -q -w "$dir" "${DUPLICITY_PACKAGES[@]:1}"
}

# free_port PREFERRED: PREFERRED when nothing listens on it on 127.0.0.1, else a free port.
# SO_REUSEADDR as the servers themselves bind: a connection of a run stopped a minute ago,
# still in TIME_WAIT, does not make the port look taken.
free_port() {
    "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
for port in (int(sys.argv[1]), 0):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(probe.getsockname()[1])
        break
PY
}
