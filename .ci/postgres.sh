# Sourced by .ci/run as root: install (if missing) and start Debian's PostgreSQL, create a
# throw-away database for the server tests and export DATABASE_URL for pytest.
# shellcheck shell=bash

_cv_pg_setup() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  local ver cluster
  ver=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1}')
  cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $2}')
  if [ -z "$ver" ]; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    cluster=main
    pg_createcluster "$ver" "$cluster" >/dev/null || return 1
  fi
  pg_ctlcluster "$ver" "$cluster" start >/dev/null 2>&1 || true
  local port
  port=$(pg_lsclusters -h | awk -v v="$ver" -v c="$cluster" '$1==v && $2==c {print $3}')
  for _ in $(seq 1 30); do
    su postgres -c "psql -p $port -tAc 'select 1'" >/dev/null 2>&1 && break
    sleep 1
  done
  su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -q" <<SQL || return 1
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'causalvis') THEN
    CREATE ROLE causalvis LOGIN PASSWORD 'causalvis';
  END IF;
END \$\$;
SQL
  su postgres -c "PGOPTIONS=--client-min-messages=warning psql -p $port -q -c 'DROP DATABASE IF EXISTS causalvis_test'" || return 1
  su postgres -c "psql -p $port -q -c 'CREATE DATABASE causalvis_test OWNER causalvis'" || return 1
  export DATABASE_URL="postgresql+psycopg://causalvis:causalvis@127.0.0.1:${port}/causalvis_test"
  echo "PostgreSQL ${ver}/${cluster} on port ${port}: DATABASE_URL=${DATABASE_URL}"
}

_cv_pg_setup
