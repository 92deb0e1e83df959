#!/bin/bash
# Container health probe without curl: GET /healthz over bash's /dev/tcp and expect HTTP 200.
# The port comes from AUTHORIZER__SERVER__LISTEN (default 0.0.0.0:8080); HEALTHCHECK_PATH
# may name another path (e.g. /readyz). Exit 0 healthy, 1 not.
set -uo pipefail

listen=${AUTHORIZER__SERVER__LISTEN:-0.0.0.0:8080}
port=${HEALTHCHECK_PORT:-${listen##*:}}
path=${HEALTHCHECK_PATH:-/healthz}

if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
    echo "healthcheck: nothing listens on 127.0.0.1:$port" >&2
    exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status_line=""
IFS= read -r -t "${HEALTHCHECK_TIMEOUT_SECS:-2}" status_line <&3
exec 3>&-
case $status_line in
    "HTTP/1."?" 200"*) exit 0 ;;
    *)
        echo "healthcheck: GET $path answered '${status_line%$'\r'}'" >&2
        exit 1
        ;;
esac
