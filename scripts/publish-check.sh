#!/usr/bin/env bash
# What `cargo publish` would upload, reviewed, and the dry run itself:
# 1. the package's file list: fails if it ships build output (target/), fuzz corpora or
#    artifacts, the fuzz/, checks/ or bare-metal/ packages, CI tooling, or any file over 256 KiB;
# 2. the docs.rs build (nightly, every feature, `--cfg docsrs`) and its feature badges;
# 3. `cargo publish --dry-run`: packages, builds the packaged crate alone, and fails on any
#    warning (a clean dry run);
# 4. prints the package's size, compressed and unpacked (fails past 2 MiB unpacked).
# Needs cargo and crates.io (nightly for step 2, else skipped). Builds in target/publish-check
# and target/docsrs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=target/publish-check
max_file_bytes=$((256 * 1024))
max_unpacked_bytes=$((2 * 1024 * 1024))

# A dry run of the working tree as it is (uncommitted changes included): a check, not a release.
list="$(cargo package --list --allow-dirty --quiet)"
files="$(printf '%s\n' "$list" | grep -vxE 'Cargo.toml.orig|\.cargo_vcs_info\.json|Cargo\.lock|Cargo\.toml')"
echo "--- the package ships $(printf '%s\n' "$list" | wc -l) files:"
printf '%s\n' "$list" | awk -F/ '{ print (NF > 1 ? $1 "/" : $1) }' | sort | uniq -c | sed 's/^ */  /'

bad="$(printf '%s\n' "$list" |
    grep -E '(^|/)target/|(^|/)corpus/|(^|/)artifacts/|^fuzz/|^checks/|^bare-metal/|^\.ci/|^scripts/|\.profraw$|\.crate$|(^|/)\.git/' || true)"
if [ -n "$bad" ]; then
    echo "FAIL: the package would ship files that do not belong in it:"
    printf '  %s\n' $bad
    exit 1
fi
large=""
while read -r f; do
    size=$(wc -c < "$f")
    if [ "$size" -gt "$max_file_bytes" ]; then large="$large $f($size)"; fi
done <<< "$files"
if [ -n "$large" ]; then
    echo "FAIL: files over $max_file_bytes bytes in the package:$large"
    exit 1
fi
for needed in README.md LICENSE src/lib.rs; do
    if ! printf '%s\n' "$list" | grep -qx "$needed"; then
        echo "FAIL: the package lacks $needed"
        exit 1
    fi
done
echo "ok: no build output, corpora, CI tooling or file over $max_file_bytes bytes"

echo "--- docs.rs build: cargo +nightly doc --all-features with --cfg docsrs"
if cargo +nightly --version >/dev/null 2>&1; then
    RUSTDOCFLAGS="--cfg docsrs -D warnings" RUSTFLAGS="--cfg docsrs" CARGO_TARGET_DIR=target/docsrs \
        cargo +nightly doc --no-deps --all-features --quiet
    page=target/docsrs/doc/libdd_alloc/type.ChainAllocator.html
    for feature in allocator-api2-03 allocator-api2-04 nightly; do
        if ! grep -q "Available on <strong>crate feature <code>$feature</code></strong> only" "$page"; then
            echo "FAIL: no docs.rs badge for feature $feature on ChainAllocator's page"
            exit 1
        fi
    done
    echo "ok: documentation builds with every feature, feature-gated impls carry their badge"
else
    echo "skipped: no nightly toolchain (docs.rs builds with nightly)"
fi

echo "--- cargo publish --dry-run"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo publish --dry-run --allow-dirty 2>&1 | tee "$log"
if grep '^warning' "$log" | grep -vq '^warning: aborting upload due to dry run$'; then
    echo "FAIL: cargo publish --dry-run is not clean (warnings above)"
    exit 1
fi
packaged="$(sed -n 's/^ *Packaged \(.*\)$/\1/p' "$log" | tail -n 1)"
unpacked="$CARGO_TARGET_DIR/package/libdd-alloc-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
unpacked_bytes=$(find "$unpacked" -type f -not -path "$unpacked/target/*" -exec cat {} + | wc -c)
echo "publish-check: packaged $packaged; $unpacked_bytes bytes unpacked"
if [ -z "$packaged" ] || [ "$unpacked_bytes" -gt "$max_unpacked_bytes" ]; then
    echo "FAIL: no package, or over $max_unpacked_bytes bytes unpacked"
    exit 1
fi
