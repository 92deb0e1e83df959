#!/bin/bash
# Reconciles the business day before today, once, and exits with the reconciler's code
# (0 clean, 1 breaks above report.break_threshold, 2 could not run, 3 no presentments file
# yet: the clearing was not checked). For schedulers that
# start a job at a time (a Kubernetes CronJob) instead of `reconciler daemon`.
#
# The business day is taken in RECONCILER__MATCHING__TIME_ZONE (e.g. America/Santiago) when
# it is set: the reconciler itself takes the day before today's there (`--date yesterday`),
# daylight saving time and all. Otherwise in RECONCILER__MATCHING__UTC_OFFSET (e.g. -03:00),
# which must then be set: the reconciler reads the same variables, so the date and the
# matching window agree. Extra arguments go to `reconciler run` (e.g. --force).
set -euo pipefail

zone=${RECONCILER__MATCHING__TIME_ZONE:-}
if [ -n "$zone" ]; then
    if [ -z "${RECONCILE_NOW:-}" ]; then
        echo "reconcile-yesterday: the business date before today's in $zone" >&2
        exec "${RECONCILER_BIN:-reconciler}" run --date yesterday "$@"
    fi
    # RECONCILE_NOW (unix seconds) pins "now" for tests: the day before its date there.
    today=$(TZ=$zone date -d "@$RECONCILE_NOW" +%F)
    date=$(TZ=$zone date -d "$today -1 day" +%F)
    echo "reconcile-yesterday: business date $date (time zone $zone)" >&2
    exec "${RECONCILER_BIN:-reconciler}" run --date "$date" "$@"
fi
offset=${RECONCILER__MATCHING__UTC_OFFSET:-}
if [ -z "$offset" ]; then
    echo "reconcile-yesterday: set RECONCILER__MATCHING__TIME_ZONE (e.g. America/Santiago) or RECONCILER__MATCHING__UTC_OFFSET (e.g. -03:00), where the business day is counted" >&2
    exit 2
fi
# A POSIX TZ counts hours west of UTC: -03:00 is "UTC+03:00", +05:30 is "UTC-05:30".
case $offset in
    Z | +00:00 | -00:00) tz=UTC0 ;;
    -[0-9][0-9]:[0-9][0-9]) tz="UTC+${offset#-}" ;;
    +[0-9][0-9]:[0-9][0-9]) tz="UTC-${offset#+}" ;;
    *)
        echo "reconcile-yesterday: RECONCILER__MATCHING__UTC_OFFSET '$offset' must look like -03:00" >&2
        exit 2
        ;;
esac
# A fixed offset has no daylight saving: yesterday is exactly 86400 s ago. RECONCILE_NOW
# (unix seconds) pins "now" for tests.
now=${RECONCILE_NOW:-$(date +%s)}
date=$(TZ=$tz date -d "@$((now - 86400))" +%F)
echo "reconcile-yesterday: business date $date (UTC offset $offset)" >&2
exec "${RECONCILER_BIN:-reconciler}" run --date "$date" "$@"
