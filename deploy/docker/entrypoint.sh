#!/bin/bash
# Container entrypoint: turns secrets mounted as files into the environment variables the
# binaries read, then runs the command as PID 1 (signals reach it directly).
#
# For every variable NAME_FILE=/path whose NAME is one the binaries read (DATABASE_URL,
# REDIS_URL, AUTHORIZER__*, RECONCILER__*), NAME is set to the file's content (trailing
# newlines removed) and NAME_FILE is unset: the settings loader refuses unknown
# AUTHORIZER__/RECONCILER__ keys, so the _FILE form must not reach it. Setting both NAME and
# NAME_FILE is an error. Secret values are never printed.
set -euo pipefail

for name in $(compgen -e); do
    case $name in
        DATABASE_URL_FILE | REDIS_URL_FILE | AUTHORIZER__*_FILE | RECONCILER__*_FILE) ;;
        *) continue ;;
    esac
    target=${name%_FILE}
    path=${!name}
    if [ -n "${!target:-}" ]; then
        echo "entrypoint: both $target and $name are set; set only one" >&2
        exit 2
    fi
    if [ ! -r "$path" ]; then
        echo "entrypoint: $name names $path, which is missing or unreadable (uid $(id -u))" >&2
        exit 2
    fi
    value=$(<"$path")
    export "$target=$value"
    unset "$name"
done

exec "$@"
