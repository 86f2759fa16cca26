#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin, abi3) into a virtual environment
# and runs its pytest suite: the API, zero-copy results, the GIL, and interop with
# Polars, DuckDB and pandas; then executes notebooks/python_package.ipynb with it.
#
#   scripts/python_tests.sh            # debug build of the extension (what CI runs)
#   scripts/python_tests.sh --release  # optimized build, as `pip install ./python` makes
#
# The environment is python/.venv (created when missing). Everything comes from pip:
# maturin builds the wheel; pyarrow, pytest, Polars, DuckDB and pandas are the test's
# readers. CARGO_TARGET_DIR, when set, is shared with the other builds.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
for a in "$@"; do
    case "$a" in
        --release) profile=release ;;
        *) echo "usage: $0 [--release]" >&2; exit 2 ;;
    esac
done

venv=python/.venv
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$py" -m pip install --quiet --disable-pip-version-check \
    maturin pyarrow pytest polars duckdb pandas nbconvert ipykernel matplotlib numpy

# maturin's PEP 517 backend takes cargo arguments from MATURIN_PEP517_ARGS.
MATURIN_PEP517_ARGS="--profile $profile" \
    "$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python

# Run from python/tests so `import lightning_db` finds the installed package, not the
# source tree's (which has no compiled extension).
(cd python/tests && "../.venv/bin/python" -m pytest -q .)

# The notebook that uses the package (load, query, plot) runs in the same environment.
out="$(mktemp -d)"
LDB_PLOTS="$out/plots" "$py" -m nbconvert --to notebook --execute \
    notebooks/python_package.ipynb --output-dir "$out"
ls "$out/plots"
