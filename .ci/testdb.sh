# Sourced by `make test`: give the PostgreSQL tests a database so that a newcomer's
# `make test` skips nothing. DATABASE_URL already set (e.g. by .ci/run): use it. As root:
# Debian's cluster (.ci/postgres.sh, installs the package if missing). Otherwise, when the
# PostgreSQL server binaries are present: a throw-away cluster in a temporary folder on a
# free local port, stopped and removed when the tests end. Else: say that they are skipped.
# shellcheck shell=bash

_cv_pg_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

_cv_pg_throwaway() {
  local bin dir port
  bin=$(_cv_pg_bin)
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || return 1
  dir=$(mktemp -d "${TMPDIR:-/tmp}/causalvis-pg.XXXXXX") || return 1
  trap "rm -rf '$dir'" EXIT
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin/initdb" -D "$dir/data" -A trust -U causalvis >/dev/null || return 1
  # shellcheck disable=SC2064
  trap "'$bin/pg_ctl' -D '$dir/data' -m fast stop >/dev/null 2>&1; rm -rf '$dir'" EXIT
  "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || return 1
  # initdb's own "postgres" database: the tests create and drop their tables themselves.
  export DATABASE_URL="postgresql+psycopg://causalvis@127.0.0.1:${port}/postgres"
  echo "throw-away PostgreSQL on port ${port}: DATABASE_URL=${DATABASE_URL}"
}

if [ -z "${DATABASE_URL:-}" ]; then
  if [ "$(id -u)" = "0" ] && [ -f .ci/postgres.sh ]; then
    # shellcheck disable=SC1091
    . .ci/postgres.sh || echo "warning: PostgreSQL could not be started; its tests will be skipped"
  elif ! _cv_pg_throwaway; then
    echo "warning: no PostgreSQL server could be started here (initdb/pg_ctl missing or failing): the PostgreSQL tests will be skipped"
  fi
fi
