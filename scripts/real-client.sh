#!/usr/bin/env bash
# The real client of libdd-alloc 1.0 on crates.io, built and tested against this checkout: the
# downstream check a crater run would give us.
#
# 1. A throwaway package depending on `libdd-profiling = "=1.0.0"` is `cargo fetch`ed, and the
#    published source is copied out of the cargo registry (with the Cargo.lock it ships, so its
#    other dependencies stay at the versions it was published with).
# 2. The migration to 2.x is applied: scripts/real-client/libdd-profiling-1.0.0.patch (version
#    2.0.0, `new_in` -> `new_lazy_in` in four places, one `use libdd_alloc::Allocator` dropped).
# 3. `[patch.crates-io] libdd-alloc = { path = <this checkout> }` points every dependency on
#    libdd-alloc 2.x at this checkout; a crate that still asks for 1.x would keep the crates.io
#    1.0.0, and the script says so.
# 4. Its lib and integration tests run; the script prints the counts and fails if any test fails
#    or none ran.
#
# Needs cargo, git (for `git apply`) and crates.io. Builds in target/real-client of this checkout
# (override with REAL_CLIENT_TARGET_DIR), so a second run is warm.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
client=libdd-profiling
version=1.0.0
# REAL_CLIENT_PATCH: another migration patch to try (default: the one kept in the repo).
patch_file="${REAL_CLIENT_PATCH:-$root/scripts/real-client/$client-$version.patch}"
target_dir="${REAL_CLIENT_TARGET_DIR:-$root/target/real-client}"
ours="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

echo "--- fetching $client $version from crates.io"
mkdir -p "$tmp/fetch/src"
cat > "$tmp/fetch/Cargo.toml" <<TOML
[package]
name = "real-client-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$client = "=$version"

[workspace]
TOML
: > "$tmp/fetch/src/lib.rs"
(cd "$tmp/fetch" && cargo fetch --quiet)
manifest="$(cd "$tmp/fetch" && cargo metadata --format-version 1 |
    grep -o "\"manifest_path\":\"[^\"]*/$client-$version/Cargo.toml\"" | head -n 1 |
    sed 's/^"manifest_path":"//; s/"$//')"
if [ -z "$manifest" ] || [ ! -f "$manifest" ]; then
    echo "FAIL: no source of $client $version in the cargo registry after cargo fetch"
    exit 1
fi
work="$tmp/$client-$version"
cp -R "$(dirname "$manifest")" "$work"
chmod -R u+w "$work"

echo "--- applying the migration: ${patch_file#"$root/"}"
(cd "$work" && git apply --verbose "$patch_file")
if grep -q '^\[patch' "$work/Cargo.toml" || grep -q '^\[workspace\]' "$work/Cargo.toml"; then
    echo "FAIL: $client's Cargo.toml already has [patch] or [workspace]: update this script"
    exit 1
fi
cat >> "$work/Cargo.toml" <<TOML

[patch.crates-io]
libdd-alloc = { path = "$root" }

[workspace]
TOML

cd "$work"
export CARGO_TARGET_DIR="$target_dir"
# Resolve first, and check that the client really uses this checkout.
cargo update --quiet --workspace
tree="$(cargo tree --quiet --edges normal --invert "libdd-alloc@$ours" --depth 1 2>/dev/null || true)"
if ! printf '%s\n' "$tree" | grep -qF "libdd-alloc v$ours ($root)"; then
    echo "FAIL: $client does not resolve libdd-alloc to this checkout:"
    printf '%s\n' "$tree"
    exit 1
fi
printf '%s\n' "$tree"
others="$(sed -n '/^name = "libdd-alloc"$/{n;p}' Cargo.lock | grep -vF "\"$ours\"" || true)"
if [ -n "$others" ]; then
    echo "note: other copies of libdd-alloc in the graph (dependencies that still ask for 1.x):"
    printf '  %s\n' "$others"
fi

echo "--- $client lib and integration tests against this checkout"
log="$tmp/test.log"
status=0
cargo test --no-fail-fast --lib --tests 2>&1 | tee "$log" || status=$?
passed=0
failed=0
while read -r p f; do
    passed=$((passed + p))
    failed=$((failed + f))
done < <(sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log")
echo "--- $client $version against this checkout, per test binary:"
paste -d' ' \
    <(sed -n 's/^ *Running \([^ ]*\).*/\1/p' "$log") \
    <(sed -n 's/^test result: \([a-zA-Z]*\)\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1: \2 passed, \3 failed/p' "$log") |
    sed 's/^/  /'
echo "real-client: $passed passed, $failed failed ($(($(date +%s) - start)) s)"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    echo "FAIL: $client's tests did not all pass against this checkout (cargo exit $status)"
    exit 1
fi
