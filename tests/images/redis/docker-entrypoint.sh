#!/usr/bin/env bash
# The official redis image's entrypoint contract: `redis-server` (or options starting with
# `-`) runs as the redis user (uid 999) in /data with protected mode off (the container's
# network is the boundary); anything else runs as given.
set -Eeuo pipefail

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ]; then
    shift
    set -- redis-server "$@" --protected-mode no
    if [ "$(id -u)" = '0' ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
