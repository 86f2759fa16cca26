#!/usr/bin/env bash
# Tests the Arrow Flight SQL server (`lightning-cli serve --flight`) with a client from
# outside the project: the ADBC Flight SQL driver from pip, through its DB-API, over
# loopback (tests/flight_sql/). Each test starts its own server on 127.0.0.1.
#
#   scripts/flight_sql_tests.sh
#
# The lightning-cli binary is built as the workspace builds it (so the DataFusion stack
# is not compiled again with other features); LDB_CLI points at another one. The Python
# environment is python/.venv (shared with scripts/python_tests.sh, created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${LDB_CLI:-}" ]]; then
    cargo build --workspace --lib --bins --examples
    LDB_CLI="${CARGO_TARGET_DIR:-target}/debug/lightning-cli"
fi
case "$LDB_CLI" in /*) ;; *) LDB_CLI="$(pwd)/$LDB_CLI" ;; esac
export LDB_CLI

venv=python/.venv
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
py="$(pwd)/$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check \
    adbc-driver-flightsql adbc-driver-manager pyarrow duckdb cryptography pytest

cd tests/flight_sql
"$py" -m pytest -q -p no:cacheprovider .
