# Sourced by the baseline scripts: DuckDB for the side-by-side runs, installed with pip
# into .venv/ at the repository root.

# Prints the Python interpreter that has the `duckdb` package, creating .venv/ and
# installing DuckDB into it when needed; prints a warning and fails when it cannot.
duckdb_python() {
    local venv=.venv
    if [[ ! -x $venv/bin/python ]] && ! python3 -m venv "$venv" >&2; then
        echo "warning: could not create $venv; DuckDB is skipped" >&2
        return 1
    fi
    if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check duckdb >&2 ||
            { echo "warning: pip could not install duckdb; DuckDB is skipped" >&2; return 1; }
    fi
    echo "$venv/bin/python"
}
