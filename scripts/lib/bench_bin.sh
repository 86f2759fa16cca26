# Build one of the harness binaries and print its path: `bench_bin <profile> <bin>`.
#
# Built with `--workspace --examples`, the feature set `cargo test --workspace` uses, so a
# run right after the tests (CI's smoke runs) reuses their build; `-p lightning-bench`
# alone resolves other features and compiles the DataFusion stack once more.
bench_bin() {
    local profile="$1" bin="$2" dir
    cargo build --profile "$profile" --workspace --examples --bin "$bin" >&2 || return 1
    case "$profile" in
        dev | test) dir=debug ;;
        *) dir="$profile" ;;
    esac
    echo "${CARGO_TARGET_DIR:-target}/$dir/$bin"
}
