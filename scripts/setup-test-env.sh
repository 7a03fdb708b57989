#!/usr/bin/env bash
# Prepare a Debian 12 machine for the composite-store test suite.
#
# * installs (via apt, only when missing) PostgreSQL, ClickHouse's
#   clickhouse-server (and clickhouse-client when available), python3's
#   venv module and ZooKeeper (the tests' ClickHouse cluster runs its jar);
# * makes sure a PostgreSQL cluster listens on 127.0.0.1:5432 and lets user
#   "postgres" in over local TCP without a password (trust), starting or
#   creating the cluster when needed, and waits until it accepts connections.
#
# * installs (via apt, only when missing) postgresql-<version>-partman, the
#   pg_partman extension the vNext observability layout uses when present;
# * installs (via apt, only when missing) node and npm; when that node is
#   older than 20 (Debian 12's is 18), installs node 22 from the npm registry
#   into /usr/local; then runs `npm ci` in tests/interop: Mastra's own
#   packages, which the interop tests (tests/test_interop_mastra.py) run on
#   the same databases; skipped when tests/interop/node_modules already
#   matches package-lock.json.
#
# It does NOT start a ClickHouse service: the tests start their own
# throwaway clickhouse-server on free ports (see tests/servers.py).  If the
# package's postinst started one on port 9000 that is harmless.
#
# Idempotent: on a machine that is already set up it changes nothing and
# needs neither root nor network.  Installing or reconfiguring needs root.
#
# Usage: scripts/setup-test-env.sh        (no arguments, no stdin needed)
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=${SETUP_PG_PORT:-5432}          # overridable only to test this script
PG_NEW_CLUSTER=${SETUP_PG_CLUSTER:-main} # name used if a cluster must be created
PG_USER=postgres
PG_WAIT_SECONDS=60
HBA_MARKER="# composite-store tests: trust local connections (added by scripts/setup-test-env.sh)"

export DEBIAN_FRONTEND=noninteractive
# Debian puts clickhouse-server, pg tools' helpers etc. in sbin dirs.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'setup-test-env: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() {
    [ "$(id -u)" -eq 0 ] || die "need root to $1 (re-run as root, e.g. with sudo)"
}

# --- packages ---------------------------------------------------------------

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

have_clickhouse_server() {
    command -v clickhouse-server >/dev/null 2>&1 || command -v clickhouse >/dev/null 2>&1
}

have_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# The ClickHouse cluster of the tests (tests/servers.py ClickHouseCluster) runs Debian's
# ZooKeeper from its jar (and java), in a temporary directory: the package's own service is unused.
have_zookeeper() {
    [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1
}

have_node() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1
}

have_python_venv() {
    command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

apt_available() {
    # Whether apt knows an installable candidate for the package.
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

install_missing_packages() {
    local -a wanted=() optional=()
    have_postgres || wanted+=(postgresql)
    have_clickhouse_server || wanted+=(clickhouse-server)
    have_python_venv || wanted+=(python3 python3-venv)
    have_node || wanted+=(nodejs npm)
    have_zookeeper || wanted+=(zookeeper)

    if [ "${#wanted[@]}" -eq 0 ]; then
        log "packages: postgresql, clickhouse-server, python3-venv, node/npm and zookeeper already present"
        if ! command -v clickhouse-client >/dev/null 2>&1; then
            log "packages: clickhouse-client not installed (optional; not installing it on its own)"
        fi
        return 0
    fi

    require_root "install ${wanted[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; this script supports Debian 12 only"
    log "packages: installing ${wanted[*]}"
    apt-get update -q
    if ! command -v clickhouse-client >/dev/null 2>&1 && apt_available clickhouse-client; then
        optional+=(clickhouse-client)
    fi
    # clickhouse-server's postinst runs "invoke-rc.d clickhouse-server start":
    # denied by policy-rc.d in containers (fine), or it starts a server on
    # port 9000 (also fine: the tests use their own servers on free ports).
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${wanted[@]}" "${optional[@]}" </dev/null

    have_postgres || die "PostgreSQL tools still missing after installing postgresql"
    have_clickhouse_server || die "clickhouse-server still missing after installing it"
    have_python_venv || die "python3 venv/ensurepip still missing after installing python3-venv"
    have_node || die "node or npm still missing after installing nodejs and npm"
    have_zookeeper || die "zookeeper.jar or java still missing after installing zookeeper"
}

# --- Mastra's packages for the interop tests --------------------------------

INTEROP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/interop" && pwd)"
# node_modules/ holds the hash of the package-lock.json it was installed from.
INTEROP_STAMP="$INTEROP_DIR/node_modules/.composite-store-lock.sha256"
NODE_MIN_MAJOR=20   # the oldest node the interop tests run on (18 lacks ESM's global crypto)
NODE_FROM_NPM=22    # the node installed from the npm registry when the system's is older
                    # (Mastra 1.71 declares >= 22.13)
NODE_PREFIX=${SETUP_NODE_PREFIX:-/usr/local}  # where it goes; overridable only to test this script

node_major() {
    node -p 'process.versions.node.split(".")[0]'
}

ensure_recent_node() {
    if [ "$(node_major)" -ge "$NODE_MIN_MAJOR" ]; then
        return 0
    fi
    require_root "install node $NODE_FROM_NPM (node $(node --version) is older than $NODE_MIN_MAJOR)"
    log "node: $(node --version) is older than $NODE_MIN_MAJOR;" \
        "installing node@$NODE_FROM_NPM from the npm registry into $NODE_PREFIX"
    # The "node" package puts the official binary (node-linux-<arch>) in $NODE_PREFIX/bin,
    # which comes before /usr/bin in PATH.
    npm install --global --prefix "$NODE_PREFIX" --no-audit --no-fund --loglevel=error \
        "node@$NODE_FROM_NPM" </dev/null >&2
    hash -r
    [ "$(node_major)" -ge "$NODE_MIN_MAJOR" ] ||
        die "node is still $(node --version) after installing node@$NODE_FROM_NPM into $NODE_PREFIX (check PATH)"
}

ensure_interop_packages() {
    local lock_hash
    ensure_recent_node
    lock_hash=$(sha256sum "$INTEROP_DIR/package-lock.json" | cut -d' ' -f1)
    if [ -f "$INTEROP_STAMP" ] && [ "$(cat "$INTEROP_STAMP")" = "$lock_hash" ]; then
        log "interop: tests/interop/node_modules matches package-lock.json"
        return 0
    fi
    log "interop: npm ci in tests/interop (Mastra's packages, pinned by package-lock.json)"
    # The packages declare node >= 22.13 but run on 20: npm's engine warnings are noise here.
    (cd "$INTEROP_DIR" && npm ci --no-audit --no-fund --loglevel=error </dev/null) >&2
    echo "$lock_hash" >"$INTEROP_STAMP"
}

# --- PostgreSQL -------------------------------------------------------------

# Print "version name port status owner datadir logfile" of the cluster on
# $PG_PORT, if there is one.
cluster_on_port() {
    pg_lsclusters -h 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print; exit }'
}

pg_tcp_login_works() {
    env -u PGPASSWORD -u PGSERVICE PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
        psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

pg_ready() {
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 5 >/dev/null 2>&1
}

wait_for_postgres() {
    local i logfile=$1
    for ((i = 0; i < PG_WAIT_SECONDS; i++)); do
        if pg_ready; then
            return 0
        fi
        sleep 1
    done
    log "PostgreSQL is not accepting connections on $PG_HOST:$PG_PORT after ${PG_WAIT_SECONDS}s"
    [ -n "$logfile" ] && [ -r "$logfile" ] && tail -n 30 "$logfile" >&2
    die "PostgreSQL did not become ready"
}

create_cluster() {
    local version
    version=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
        awk -F/ '{print $5}' | sort -V | tail -n 1)
    [ -n "$version" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    if pg_lsclusters -h 2>/dev/null |
        awk -v v="$version" -v n="$PG_NEW_CLUSTER" '$1 == v && $2 == n {found=1} END {exit !found}'; then
        die "cluster $version/$PG_NEW_CLUSTER exists but not on port $PG_PORT; fix it by hand (see pg_lsclusters)"
    fi
    require_root "create a PostgreSQL cluster"
    log "postgres: creating cluster $version/$PG_NEW_CLUSTER on port $PG_PORT"
    pg_createcluster --locale C.UTF-8 -p "$PG_PORT" "$version" "$PG_NEW_CLUSTER" >&2
}

# Prepend trust rules for local, 127.0.0.1 and ::1 to pg_hba.conf (first
# match wins) unless already there.  Sets HBA_CHANGED=1 if it edited the file.
# (Not meant to be called as an "if" condition: that would disable set -e.)
HBA_CHANGED=0
ensure_trust_hba() {
    local version=$1 name=$2 hba
    hba=$(pg_conftool -s "$version" "$name" show hba_file 2>/dev/null || true)
    [ -n "$hba" ] || hba="/etc/postgresql/$version/$name/pg_hba.conf"
    [ -f "$hba" ] || die "pg_hba.conf not found at $hba"
    if grep -qxF "$HBA_MARKER" "$hba" 2>/dev/null; then
        log "postgres: trust rules already in $hba"
        return 0
    fi
    require_root "edit $hba"
    log "postgres: adding trust rules for local/127.0.0.1/::1 to $hba (backup: $hba.orig)"
    [ -e "$hba.orig" ] || cp -p "$hba" "$hba.orig"
    local tmp
    tmp=$(mktemp "$hba.XXXXXX")
    {
        echo "$HBA_MARKER"
        echo "local   all   all                  trust"
        echo "host    all   all   127.0.0.1/32   trust"
        echo "host    all   all   ::1/128        trust"
        echo "# end of composite-store test rules"
        echo
        cat "$hba"
    } >"$tmp"
    chown --reference="$hba" "$tmp"
    chmod --reference="$hba" "$tmp"
    mv "$tmp" "$hba"
    HBA_CHANGED=1
}

start_cluster() {
    local version=$1 name=$2
    require_root "start PostgreSQL cluster $version/$name"
    log "postgres: starting cluster $version/$name"
    if [ -d /run/systemd/system ] && pg_ctlcluster "$version" "$name" start >&2; then
        return 0
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >&2
}

ensure_postgres() {
    local line version name port status owner datadir logfile
    line=$(cluster_on_port)
    if [ -z "$line" ]; then
        create_cluster
        line=$(cluster_on_port)
        [ -n "$line" ] || die "created a cluster but pg_lsclusters shows none on port $PG_PORT"
    fi
    read -r version name port status owner datadir logfile <<<"$line"

    if [[ "$status" == online* ]] && pg_ready && pg_tcp_login_works; then
        log "postgres: cluster $version/$name is running on $PG_HOST:$PG_PORT with passwordless access for $PG_USER"
        return 0
    fi

    ensure_trust_hba "$version" "$name"
    if [ "$HBA_CHANGED" -eq 1 ] && [[ "$status" == online* ]]; then
        log "postgres: reloading cluster $version/$name"
        pg_ctlcluster "$version" "$name" reload >&2
    fi
    if [[ "$status" != online* ]]; then
        start_cluster "$version" "$name"
    fi
    wait_for_postgres "$logfile"
    if ! pg_tcp_login_works; then
        env -u PGPASSWORD PGPASSFILE=/dev/null psql -w -X -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
            -c 'SELECT 1' >&2 || true
        die "cannot log in as $PG_USER on $PG_HOST:$PG_PORT without a password (check pg_hba.conf of $version/$name)"
    fi
    log "postgres: cluster $version/$name ready on $PG_HOST:$PG_PORT"
}

# --- pg_partman ---------------------------------------------------------------

# The vNext observability layout partitions its PostgreSQL tables with
# pg_partman when a database has the extension (tests/test_observability_vnext_sql.py
# creates it in a throwaway database); Debian packages it per server version.
ensure_partman() {
    local major package
    major=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -1)
    [ -n "$major" ] || return 0
    package="postgresql-$major-partman"
    if pkg_installed "$package"; then
        log "packages: $package already present"
        return 0
    fi
    if ! apt_available "$package"; then
        log "packages: $package not available from apt (the pg_partman test will skip)"
        return 0
    fi
    require_root "install $package"
    log "packages: installing $package"
    apt-get install -y -q --no-install-recommends "$package" </dev/null
}

main() {
    install_missing_packages
    ensure_postgres
    ensure_partman
    local ch
    ch=$(command -v clickhouse-server || command -v clickhouse)
    log "clickhouse: server binary $ch (tests start their own instances)"
    ensure_interop_packages
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
