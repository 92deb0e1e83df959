# shellcheck shell=bash
#
# Service bootstrap for the test suite: makes sure the real services the
# tests talk to are reachable on loopback, installing them with apt-get and
# starting throwaway instances when needed.
#
# Source this file (bash only), then call:
#
#   ensure_postgres        -> exports AUTHORIZER_TEST_PG_URL
#   ensure_redis           -> exports AUTHORIZER_TEST_REDIS_URL
#   ensure_sshd_available  -> exports AUTHORIZER_TEST_SSHD, AUTHORIZER_TEST_SFTP_SERVER,
#                             AUTHORIZER_TEST_SSH_KEYGEN; creates /run/sshd
#                             (only installs/locates binaries, starts nothing)
#
#   drop_leftover_test_databases   drops authz_t_* / authz_tmpl_* databases
#   stop_test_postgres / stop_test_redis   stop the instances *we* started
#
# Every function returns non-zero with a message on stderr instead of
# exiting, so callers decide what a failure means.
#
# Knobs (all optional):
#   AUTHORIZER_TEST_PG_URL      use this Postgres if it answers
#   AUTHORIZER_TEST_REDIS_URL   use this Redis if it answers
#   AUTHORIZER_TEST_STATE       state dir for own instances
#                               (default: <repo>/target/test-services)
#   AUTHORIZER_TEST_PG_PORT     port of our own Postgres   (default 55432)
#   AUTHORIZER_TEST_REDIS_PORT  port of our own Redis      (default 56379)
#   AUTHORIZER_TEST_PG_OS_USER  OS user that runs our own Postgres when we are
#                               root (default: postgres if it exists, else
#                               authorizer-test, created on demand)
#   AUTHORIZER_TEST_SKIP_SYSTEM_SERVICES=1
#                               ignore already-running/configured services and
#                               always use (start or reuse) our own instances
#   AUTHORIZER_TEST_NO_INSTALL=1  never call apt-get

if [ -z "${BASH_VERSION:-}" ]; then
    echo "scripts/lib/services.sh must be sourced from bash" >&2
    return 1 2>/dev/null || exit 1
fi

_AUTHZ_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
AUTHZ_REPO_ROOT=${AUTHZ_REPO_ROOT:-$(cd "$_AUTHZ_LIB_DIR/../.." && pwd -P)}
_AUTHZ_APT_UPDATED=${_AUTHZ_APT_UPDATED:-0}

AUTHZ_SYSTEM_PG_HOST=127.0.0.1
AUTHZ_SYSTEM_PG_PORT=5432
AUTHZ_SYSTEM_REDIS_PORT=6379

# ---------------------------------------------------------------- helpers --

_authz_log() { printf 'services: %s\n' "$*" >&2; }
_authz_err() { printf 'services: ERROR: %s\n' "$*" >&2; }

_authz_skip_system() { [ "${AUTHORIZER_TEST_SKIP_SYSTEM_SERVICES:-0}" = 1 ]; }

# Absolute state dir (created on demand by the callers).
_authz_state_dir() {
    local d=${AUTHORIZER_TEST_STATE:-$AUTHZ_REPO_ROOT/target/test-services}
    case $d in
        /*) ;;
        *) d=$AUTHZ_REPO_ROOT/$d ;;
    esac
    printf '%s\n' "$d"
}

# Print a URL with any password removed: scheme://user:pw@host -> scheme://user@host
authz_redact_url() {
    printf '%s\n' "$1" | sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://)([^:/@]*):[^@/]*@#\1\2@#'
}

# Run a command as root (directly, or through sudo).
_authz_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then
            sudo "$@"
        else
            # No terminal (CI): never hang on a password prompt.
            sudo -n "$@"
        fi
    else
        _authz_err "need root privileges for '$*' but not root and sudo is not installed"
        return 1
    fi
}

# Install Debian packages with apt-get (apt-get update runs once per process).
_authz_apt_install() {
    if [ "${AUTHORIZER_TEST_NO_INSTALL:-0}" = 1 ]; then
        _authz_err "would install '$*' but AUTHORIZER_TEST_NO_INSTALL=1"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _authz_err "cannot install '$*': apt-get not found (not a Debian-like system); install it by hand"
        return 1
    fi
    local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300)
    if [ "$_AUTHZ_APT_UPDATED" != 1 ]; then
        _authz_log "apt-get update"
        if ! _authz_as_root "${apt[@]}" update >&2; then
            _authz_err "apt-get update failed"
            return 1
        fi
        _AUTHZ_APT_UPDATED=1
    fi
    _authz_log "apt-get install $*"
    if ! _authz_as_root "${apt[@]}" install --no-install-recommends "$@" >&2; then
        _authz_err "apt-get install $* failed"
        return 1
    fi
    hash -r
}

# ------------------------------------------------------------- PostgreSQL --

# Find psql, installing the client if needed. Prints its path.
_authz_psql_bin() {
    local p d
    if p=$(command -v psql 2>/dev/null); then
        printf '%s\n' "$p"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/psql" ]; then
            printf '%s\n' "$d/psql"
            return 0
        fi
    done
    return 1
}

# psql with sane non-interactive defaults: no psqlrc, never prompt, fail fast.
_authz_psql() {
    PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} "$AUTHZ_PSQL" -X -w -q -A -t -v ON_ERROR_STOP=1 "$@"
}

# Succeeds when URL answers 'select 1'.
_authz_pg_answers() {
    local out
    out=$(_authz_psql "$1" -c 'select 1' 2>/dev/null) && [ "$out" = 1 ]
}

# Same, but refuse to use passwords from the environment or ~/.pgpass: the
# URL we export must work on its own.
_authz_pg_answers_without_password() {
    local out
    out=$(env -u PGPASSWORD PGPASSFILE=/dev/null \
        PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} \
        "$AUTHZ_PSQL" -X -w -q -A -t -c 'select 1' "$1" 2>/dev/null) && [ "$out" = 1 ]
}

_authz_pg_can_create_db() {
    local out
    out=$(_authz_psql "$1" -c 'select rolsuper or rolcreatedb from pg_roles where rolname = current_user' 2>/dev/null)
    [ "$out" = t ]
}

# Warn when the server cannot hold the test suite's connections.
_authz_pg_check_capacity() {
    local mc
    mc=$(_authz_psql "$1" -c 'show max_connections' 2>/dev/null) || return 0
    if [[ $mc =~ ^[0-9]+$ ]] && [ "$mc" -lt 100 ]; then
        _authz_log "WARNING: $(authz_redact_url "$1") has max_connections=$mc (< 100); tests may fail with 'too many clients'." \
            "Raise it, or use our own cluster: AUTHORIZER_TEST_SKIP_SYSTEM_SERVICES=1"
    fi
}

# Step 2: a server already listening on 127.0.0.1:5432 with password-less
# access for postgres (or the current user) that may create databases.
_authz_pg_try_system() {
    local host=$AUTHZ_SYSTEM_PG_HOST port=$AUTHZ_SYSTEM_PG_PORT user url
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port" -t 5 >/dev/null 2>&1 || return 1
    fi
    for user in postgres "$(id -un)"; do
        url="postgres://$user@$host:$port/postgres"
        if _authz_pg_answers_without_password "$url"; then
            if _authz_pg_can_create_db "$url"; then
                export AUTHORIZER_TEST_PG_URL=$url
                return 0
            fi
            _authz_log "server on $host:$port accepts '$user' but that role may not create databases; not using it"
        fi
    done
    _authz_log "a server answers on $host:$port but not without a password for postgres/$(id -un); using our own cluster instead"
    return 1
}

# Directory holding initdb/pg_ctl/postgres; optional major version wanted.
_authz_pg_server_bindir() {
    local want=${1:-} d v
    local -a cands=()
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null) && cands+=("$d")
    fi
    while IFS= read -r d; do
        cands+=("$d")
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    if d=$(command -v initdb 2>/dev/null); then
        cands+=("$(dirname "$d")")
    fi
    for d in "${cands[@]}"; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            if [ -n "$want" ]; then
                v=$("$d/postgres" --version 2>/dev/null | sed -nE '1s/^[^0-9]*([0-9]+).*/\1/p')
                [ "$v" = "$want" ] || continue
            fi
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

# OS user that runs our own cluster ("" = the current user).
_authz_pg_os_user() {
    if [ "$(id -u)" -ne 0 ]; then
        printf '\n'
        return 0
    fi
    local u=${AUTHORIZER_TEST_PG_OS_USER:-}
    if [ -z "$u" ]; then
        if id -u postgres >/dev/null 2>&1; then
            u=postgres
        else
            u=authorizer-test
        fi
    fi
    if ! id -u "$u" >/dev/null 2>&1; then
        _authz_log "creating system user '$u' to run the test cluster (postgres refuses to run as root)"
        if ! useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$u" >&2; then
            _authz_err "could not create system user '$u' (useradd failed)"
            return 1
        fi
    fi
    printf '%s\n' "$u"
}

# Run a command as the cluster's OS user, from / (the user may not be able to
# read the caller's cwd).
_authz_pg_as_user() {
    local u=$1
    shift
    (
        # Don't let the postmaster inherit (and hold forever) our lock.
        if [ -n "${_AUTHZ_LOCKFD:-}" ]; then
            exec {_AUTHZ_LOCKFD}>&-
        fi
        cd / || exit 1
        if [ -z "$u" ]; then
            "$@"
        else
            runuser -u "$u" -- "$@"
        fi
    )
}

# Where our cluster lives. Normally <state>/pg; when we are root and the
# cluster user cannot reach that path (repo cloned under /root, say), a
# directory under /var/tmp keyed by the state path.
_authz_pg_home() {
    local u=$1 state base h
    state=$(_authz_state_dir)
    base=$state/pg
    mkdir -p "$base" || return 1
    if [ -z "$u" ]; then
        printf '%s\n' "$base"
        return 0
    fi
    chown "$u" "$base" || return 1
    if runuser -u "$u" -- test -w "$base" 2>/dev/null; then
        printf '%s\n' "$base"
        return 0
    fi
    h=$(printf '%s' "$state" | cksum | cut -d' ' -f1)
    base=/var/tmp/authorizer-test-services-$h
    _authz_log "user '$u' cannot reach $state; keeping the test cluster in $base/pg"
    if [ -L "$base" ] || { [ -e "$base" ] && [ "$(stat -c %u "$base")" != 0 ]; }; then
        _authz_err "$base exists and is not a root-owned directory; remove it"
        return 1
    fi
    mkdir -p -m 755 "$base" && mkdir -p "$base/pg" && chown "$u" "$base/pg" || return 1
    printf '%s\n' "$base/pg"
}

# Step 3: start (or reuse) our own throwaway cluster on 127.0.0.1:$port.
_authz_pg_own_cluster() {
    local port=${AUTHORIZER_TEST_PG_PORT:-55432}
    local u home data log sockdir st

    u=$(_authz_pg_os_user) || return 1
    home=$(_authz_pg_home "$u") || { _authz_err "cannot create the cluster directory"; return 1; }
    data=$home/data
    log=$home/postgres.log
    sockdir=$home/run

    # Serialise concurrent test runs around create/start.
    _AUTHZ_LOCKFD=""
    if command -v flock >/dev/null 2>&1 && touch "$home/.lock" 2>/dev/null; then
        exec {_AUTHZ_LOCKFD}>>"$home/.lock"
        flock -w 300 "$_AUTHZ_LOCKFD" || _authz_log "could not lock $home/.lock within 300s; continuing"
    fi
    _authz_pg_own_cluster_locked "$u" "$home" "$data" "$log" "$sockdir" "$port"
    st=$?
    if [ -n "$_AUTHZ_LOCKFD" ]; then
        exec {_AUTHZ_LOCKFD}>&-
        _AUTHZ_LOCKFD=""
    fi
    return $st
}

_authz_pg_own_cluster_locked() {
    local u=$1 home=$2 data=$3 log=$4 sockdir=$5 port=$6
    local bindir ver running_port url sockconf locale

    if [ -f "$data/PG_VERSION" ]; then
        ver=$(cat "$data/PG_VERSION")
        if ! bindir=$(_authz_pg_server_bindir "$ver"); then
            _authz_err "existing test cluster $data is PostgreSQL $ver but no PostgreSQL $ver server binaries are installed; delete $data to recreate it"
            return 1
        fi
    else
        bindir=$(_authz_pg_server_bindir) || {
            _authz_err "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found"
            return 1
        }
    fi

    if [ -n "$u" ]; then
        chown -R "$u" "$home" || return 1
    fi
    _authz_pg_as_user "$u" mkdir -p "$sockdir" || return 1

    if [ ! -f "$data/PG_VERSION" ]; then
        if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
            _authz_err "$data exists, is not empty and is not a cluster; remove it"
            return 1
        fi
        locale=C
        if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then
            locale=C.UTF-8
        fi
        _authz_log "initdb $data ($("$bindir/postgres" --version))"
        if ! _authz_pg_as_user "$u" "$bindir/initdb" -D "$data" -U postgres --auth=trust \
            -E UTF8 --locale="$locale" >"$home/initdb.log" 2>&1; then
            cat "$home/initdb.log" >&2
            _authz_err "initdb failed (log: $home/initdb.log)"
            return 1
        fi
        printf "\n# Test settings are (re)written by scripts/lib/services.sh on every start.\ninclude_if_exists = 'authorizer-test.conf'\n" \
            | _authz_pg_as_user "$u" tee -a "$data/postgresql.conf" >/dev/null || return 1
    fi

    # Unix socket paths are limited to ~107 bytes; go TCP-only when too long.
    sockconf=$sockdir
    if [ $(( ${#sockdir} + ${#port} + 10 )) -gt 100 ]; then
        sockconf=
    fi
    {
        echo "# Managed by scripts/lib/services.sh - rewritten on every start."
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$sockconf'"
        echo "max_connections = 300"
        echo "shared_buffers = 128MB"
        echo "fsync = on                 # tests check durability: keep it on"
        echo "synchronous_commit = on"
        echo "full_page_writes = on"
    } | _authz_pg_as_user "$u" tee "$data/authorizer-test.conf.new" >/dev/null || return 1

    running_port=
    if _authz_pg_as_user "$u" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        running_port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null)
        if cmp -s "$data/authorizer-test.conf.new" "$data/authorizer-test.conf" && [ "$running_port" = "$port" ]; then
            rm -f "$data/authorizer-test.conf.new"
            _authz_log "reusing running test cluster $data"
        else
            if [ "$running_port" != "$port" ] && command -v pg_isready >/dev/null 2>&1 \
                && pg_isready -q -h 127.0.0.1 -p "$port" -t 3 >/dev/null 2>&1; then
                rm -f "$data/authorizer-test.conf.new"
                _authz_err "another PostgreSQL already listens on 127.0.0.1:$port (not our test cluster, which runs on $running_port); set AUTHORIZER_TEST_PG_PORT to a free port"
                return 1
            fi
            _authz_log "test cluster $data runs with other settings; restarting it"
            _authz_pg_as_user "$u" "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2 || return 1
            running_port=
        fi
    fi

    if [ -z "$running_port" ]; then
        mv -f "$data/authorizer-test.conf.new" "$data/authorizer-test.conf" || return 1
        if command -v pg_isready >/dev/null 2>&1 \
            && pg_isready -q -h 127.0.0.1 -p "$port" -t 3 >/dev/null 2>&1; then
            _authz_err "another PostgreSQL already listens on 127.0.0.1:$port (not our test cluster); set AUTHORIZER_TEST_PG_PORT to a free port"
            return 1
        fi
        _authz_log "starting test cluster $data on 127.0.0.1:$port (log: $log)"
        if ! _authz_pg_as_user "$u" "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 120 start >/dev/null; then
            tail -n 30 "$log" >&2 2>/dev/null || true
            _authz_err "the test cluster did not start (log: $log)"
            return 1
        fi
    fi

    url="postgres://postgres@127.0.0.1:$port/postgres"
    if ! _authz_pg_answers "$url"; then
        tail -n 30 "$log" >&2 2>/dev/null || true
        _authz_err "the test cluster runs but $url does not answer (log: $log)"
        return 1
    fi
    # Remember how to stop it.
    printf '%s\n%s\n%s\n' "$bindir" "$data" "$u" >"$(_authz_state_dir)/pg.instance" 2>/dev/null || true
    export AUTHORIZER_TEST_PG_URL=$url
}

ensure_postgres() {
    local state reasons=()
    state=$(_authz_state_dir)
    mkdir -p "$state" || { _authz_err "cannot create state dir $state"; return 1; }

    if ! AUTHZ_PSQL=$(_authz_psql_bin); then
        _authz_log "psql not found; installing postgresql-client"
        _authz_apt_install postgresql-client || true
        AUTHZ_PSQL=$(_authz_psql_bin) || {
            _authz_err "PostgreSQL is unavailable: the psql client is missing and could not be installed (apt-get install postgresql-client)"
            return 1
        }
    fi

    if ! _authz_skip_system; then
        # 1. An explicitly configured server.
        if [ -n "${AUTHORIZER_TEST_PG_URL:-}" ]; then
            if _authz_pg_answers "$AUTHORIZER_TEST_PG_URL"; then
                export AUTHORIZER_TEST_PG_URL
                _authz_pg_check_capacity "$AUTHORIZER_TEST_PG_URL"
                _AUTHZ_PG_KIND=configured
                return 0
            fi
            _authz_log "WARNING: AUTHORIZER_TEST_PG_URL=$(authz_redact_url "$AUTHORIZER_TEST_PG_URL") does not answer; looking for another server"
        fi
        # 2. The machine's server on 127.0.0.1:5432.
        if _authz_pg_try_system; then
            _authz_pg_check_capacity "$AUTHORIZER_TEST_PG_URL"
            _AUTHZ_PG_KIND=system
            return 0
        fi
    fi

    # 3. Our own throwaway cluster; install the server first if needed.
    if ! _authz_pg_server_bindir >/dev/null; then
        _authz_log "no PostgreSQL server binaries found; installing postgresql"
        if _authz_apt_install postgresql; then
            AUTHZ_PSQL=$(_authz_psql_bin) || true
            # Debian may have created and started a cluster on 5432: back to step 2.
            if ! _authz_skip_system && _authz_pg_try_system; then
                _authz_pg_check_capacity "$AUTHORIZER_TEST_PG_URL"
                _AUTHZ_PG_KIND=system
                return 0
            fi
        else
            reasons+=("the postgresql package could not be installed")
        fi
    fi

    if _authz_pg_own_cluster; then
        _AUTHZ_PG_KIND=own
        return 0
    fi

    # 4. Give up with one clear message.
    local why
    if _authz_skip_system; then
        why="AUTHORIZER_TEST_SKIP_SYSTEM_SERVICES=1 (running servers ignored)"
    else
        why="nothing answers without a password on 127.0.0.1:$AUTHZ_SYSTEM_PG_PORT and AUTHORIZER_TEST_PG_URL is unset or unreachable"
    fi
    if ! _authz_pg_server_bindir >/dev/null; then
        reasons+=("the PostgreSQL server binaries (initdb, pg_ctl, postgres) are missing; install them with 'sudo apt-get install postgresql'")
    else
        reasons+=("our own test cluster could not be started (see the messages above)")
    fi
    _authz_err "no usable PostgreSQL: $why, and ${reasons[*]}. Alternatively point AUTHORIZER_TEST_PG_URL at a server whose user may create databases."
    return 1
}

# Drop per-test databases left over by earlier (crashed) runs. Databases still
# in use (e.g. by a concurrently running suite) are left alone. Never fails.
drop_leftover_test_databases() {
    local url=${1:-${AUTHORIZER_TEST_PG_URL:-}} db prefix n=0
    [ -n "$url" ] || return 0
    AUTHZ_PSQL=${AUTHZ_PSQL:-$(_authz_psql_bin)} || return 0
    # Per-test databases first (they may be clones of the templates). Only
    # databases nobody is connected to: a concurrent run may be using others.
    for prefix in 'authz\_t\_' 'authz\_tmpl\_'; do
        while IFS= read -r db; do
            [ -n "$db" ] || continue
            db=${db//\"/\"\"}
            _authz_psql "$url" -c "alter database \"$db\" is_template false" >/dev/null 2>&1 || true
            if _authz_psql "$url" -c "drop database if exists \"$db\"" >/dev/null 2>&1; then
                n=$((n + 1))
            fi
        done < <(_authz_psql "$url" -c "select d.datname from pg_database d where d.datname like '${prefix}%' and not exists (select 1 from pg_stat_activity a where a.datid = d.oid) order by 1" 2>/dev/null || true)
    done
    if [ "$n" -gt 0 ]; then
        _authz_log "dropped $n leftover test database(s)"
    fi
    return 0
}

# Stop the cluster started by _authz_pg_own_cluster (never the system one).
stop_test_postgres() {
    local f bindir data u
    f=$(_authz_state_dir)/pg.instance
    [ -f "$f" ] || { _authz_log "no own test cluster recorded in $f"; return 0; }
    { read -r bindir; read -r data; read -r u; } <"$f"
    if [ -f "$data/postmaster.pid" ]; then
        _authz_pg_as_user "$u" "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2 || return 1
    fi
}

# ------------------------------------------------------------------ Redis --

_authz_redis_ping() {
    local out
    out=$(timeout 5 redis-cli "$@" ping 2>/dev/null) && [ "$out" = PONG ]
}

# Succeeds when Redis answers on 127.0.0.1:6379 (or the configured URL);
# exports the URL.
_authz_redis_try_system() {
    if [ -n "${AUTHORIZER_TEST_REDIS_URL:-}" ]; then
        if _authz_redis_ping -u "$AUTHORIZER_TEST_REDIS_URL"; then
            export AUTHORIZER_TEST_REDIS_URL
            _AUTHZ_REDIS_KIND=configured
            return 0
        fi
        _authz_log "WARNING: AUTHORIZER_TEST_REDIS_URL=$(authz_redact_url "$AUTHORIZER_TEST_REDIS_URL") does not answer; looking for another server"
    fi
    if _authz_redis_ping -h 127.0.0.1 -p "$AUTHZ_SYSTEM_REDIS_PORT"; then
        export AUTHORIZER_TEST_REDIS_URL=redis://127.0.0.1:$AUTHZ_SYSTEM_REDIS_PORT
        _AUTHZ_REDIS_KIND=system
        return 0
    fi
    return 1
}

ensure_redis() {
    local state dir port=${AUTHORIZER_TEST_REDIS_PORT:-56379} url i

    if ! command -v redis-cli >/dev/null 2>&1; then
        _authz_log "redis-cli not found; installing redis-tools"
        _authz_apt_install redis-tools || true
        if ! command -v redis-cli >/dev/null 2>&1; then
            _authz_err "Redis is unavailable: redis-cli is missing and could not be installed (apt-get install redis-tools)"
            return 1
        fi
    fi

    if ! _authz_skip_system && _authz_redis_try_system; then
        return 0
    fi

    if ! command -v redis-server >/dev/null 2>&1; then
        _authz_log "redis-server not found; installing redis-server"
        if _authz_apt_install redis-server; then
            # Debian may have started it on 6379 right away.
            if ! _authz_skip_system && _authz_redis_try_system; then
                return 0
            fi
        fi
        if ! command -v redis-server >/dev/null 2>&1; then
            _authz_err "Redis is unavailable: nothing answers on 127.0.0.1:$AUTHZ_SYSTEM_REDIS_PORT and redis-server is missing and could not be installed (apt-get install redis-server)"
            return 1
        fi
    fi

    url=redis://127.0.0.1:$port
    state=$(_authz_state_dir)
    dir=$state/redis
    mkdir -p "$dir" || { _authz_err "cannot create $dir"; return 1; }

    if _authz_redis_ping -h 127.0.0.1 -p "$port"; then
        _authz_log "reusing Redis on 127.0.0.1:$port"
    else
        _authz_log "starting test Redis on 127.0.0.1:$port (log: $dir/redis.log)"
        if ! (cd / && redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
            --save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
            --pidfile "$dir/redis.pid") >&2; then
            _authz_err "redis-server failed to start (log: $dir/redis.log)"
            return 1
        fi
        for ((i = 0; i < 50; i++)); do
            _authz_redis_ping -h 127.0.0.1 -p "$port" && break
            sleep 0.2
        done
        if ! _authz_redis_ping -h 127.0.0.1 -p "$port"; then
            tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
            _authz_err "test Redis did not answer on 127.0.0.1:$port (log: $dir/redis.log)"
            return 1
        fi
    fi
    printf '%s\n' "$port" >"$state/redis.instance" 2>/dev/null || true
    export AUTHORIZER_TEST_REDIS_URL=$url
    _AUTHZ_REDIS_KIND=own
}

# Stop the Redis started by ensure_redis (never the system one).
stop_test_redis() {
    local f port
    f=$(_authz_state_dir)/redis.instance
    [ -f "$f" ] || { _authz_log "no own test Redis recorded in $f"; return 0; }
    port=$(cat "$f")
    if _authz_redis_ping -h 127.0.0.1 -p "$port"; then
        timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    rm -f "$f"
}

# ------------------------------------------------------------ OpenSSH sshd --

# Absolute path of sshd (it refuses to run by a relative path).
_authz_find_sshd() {
    local c
    for c in "$(command -v sshd 2>/dev/null)" /usr/sbin/sshd /usr/local/sbin/sshd; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

_authz_find_sftp_server() {
    local c
    for c in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server \
        /usr/libexec/sftp-server /usr/lib/ssh/sftp-server; do
        if [ -x "$c" ]; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# Make sure sshd, sftp-server and ssh-keygen exist (installing openssh-server
# and openssh-client if needed), that sshd's privilege separation directory
# /run/sshd exists, and export the paths. Does NOT start a daemon: the tests
# (crates/reconciler/tests/sftp.rs) run their own sshd on a loopback port.
ensure_sshd_available() {
    local sshd sftp keygen
    if ! sshd=$(_authz_find_sshd) || ! sftp=$(_authz_find_sftp_server) \
        || ! keygen=$(command -v ssh-keygen 2>/dev/null); then
        _authz_log "sshd/sftp-server/ssh-keygen not found; installing openssh-server"
        _authz_apt_install openssh-server openssh-sftp-server openssh-client || true
        if ! sshd=$(_authz_find_sshd); then
            _authz_err "OpenSSH server is unavailable: sshd is missing and could not be installed (apt-get install openssh-server)"
            return 1
        fi
        if ! sftp=$(_authz_find_sftp_server); then
            _authz_err "OpenSSH sftp-server is missing and could not be installed (apt-get install openssh-sftp-server)"
            return 1
        fi
        if ! keygen=$(command -v ssh-keygen 2>/dev/null); then
            _authz_err "ssh-keygen is missing and could not be installed (apt-get install openssh-client)"
            return 1
        fi
    fi
    # sshd refuses to start without it; it lives on a tmpfs, so it is gone after
    # a reboot unless the system's ssh service recreated it.
    if [ ! -d /run/sshd ]; then
        if ! _authz_as_root install -d -m 0755 /run/sshd; then
            _authz_err "cannot create sshd's privilege separation directory /run/sshd (needs root)"
            return 1
        fi
    fi
    export AUTHORIZER_TEST_SSHD=$sshd
    export AUTHORIZER_TEST_SFTP_SERVER=$sftp
    export AUTHORIZER_TEST_SSH_KEYGEN=$keygen
}
