#!/usr/bin/env bash
# Builds the C API (cdylib + staticlib) and runs ffi/tests/c/test_api.c three ways:
# against the shared library, against the static library, and against the shared
# library under AddressSanitizer + UndefinedBehaviorSanitizer (with LeakSanitizer: every
# allocation the API returns must be freed by its free function).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
# With the workspace's feature set (as .ci/run builds it), so that DataFusion is not
# compiled once more for the C library alone.
cargo build --workspace --lib --examples
lib="$target/debug"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cc=${CC:-gcc}
flags=(-std=c11 -Wall -Wextra -Werror -D_DEFAULT_SOURCE -Iffi/include)

"$cc" "${flags[@]}" ffi/tests/c/test_api.c -L"$lib" -llightning_db_ffi \
    -Wl,-rpath,"$(cd "$lib" && pwd)" -o "$out/test_shared"
"$out/test_shared"

"$cc" "${flags[@]}" ffi/tests/c/test_api.c "$lib/liblightning_db_ffi.a" \
    -lpthread -ldl -lm -o "$out/test_static"
"$out/test_static"

"$cc" "${flags[@]}" -g -fsanitize=address,undefined -fno-omit-frame-pointer \
    ffi/tests/c/test_api.c -L"$lib" -llightning_db_ffi \
    -Wl,-rpath,"$(cd "$lib" && pwd)" -o "$out/test_asan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1 \
    "$out/test_asan"
echo "C API: shared, static and sanitizer runs passed"
