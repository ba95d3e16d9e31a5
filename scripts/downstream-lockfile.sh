#!/usr/bin/env bash
# What a user's Cargo.lock gains from depending on this crate: a throwaway package in a temp dir
# with `libdd-alloc = { path = <this checkout> }`, resolved for every target. Fails if a
# dev-only tool (loom and the crates only it pulls in) reaches it, and prints what it resolves.
# Also checks the MSRV of what it resolves: every package's declared `rust-version` is at most
# ours (a package that declares none is listed). Needs crates.io (nothing is built).
set -euo pipefail
# $1, optional: another checkout to check (default: this one).
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/client/src"
cat > "$tmp/client/Cargo.toml" <<TOML
[package]
name = "downstream-client"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libdd-alloc = { path = "$root" }

[workspace]
TOML
: > "$tmp/client/src/lib.rs"
(cd "$tmp/client" && CARGO_TARGET_DIR="$tmp/target" cargo generate-lockfile --quiet)
packages="$(sed -n 's/^name = "\(.*\)"$/\1/p' "$tmp/client/Cargo.lock" | sort)"
count="$(printf '%s\n' "$packages" | grep -vc '^downstream-client$')"
echo "a fresh dependent resolves $count packages (all targets):"
printf '%s\n' "$packages" | grep -v '^downstream-client$' | uniq -c | sed 's/^ */  /'
bad="$(printf '%s\n' "$packages" | grep -xE 'loom|generator|scoped-tls|tracing|tracing-subscriber|proptest|trybuild' || true)"
if [ -n "$bad" ]; then
    echo "FAIL: dev-only crates reach users' lockfiles:" $bad
    exit 1
fi
echo "ok: no dev-only crate in a dependent's lockfile"

# The MSRV check covers the optional dependencies too: `nightly` and `asan-poison` add none, and
# `std` is on by default.
msrv="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$root/Cargo.toml")"
sed -i 's/^libdd-alloc = { path = \(.*\) }$/libdd-alloc = { path = \1, features = ["allocator-api2-03", "allocator-api2-04"] }/' \
    "$tmp/client/Cargo.toml"
grep -q 'features = \["allocator-api2-03"' "$tmp/client/Cargo.toml"
(cd "$tmp/client" && CARGO_TARGET_DIR="$tmp/target" cargo fetch --quiet)
newer=""
while read -r manifest; do
    dir="$(dirname "$manifest")"
    [ "$dir" = "$tmp/client" ] && continue
    name="$(basename "$dir")"
    [ "$dir" = "$root" ] && name="libdd-alloc (this checkout)"
    theirs="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$manifest" | head -n 1)"
    if [ -z "$theirs" ]; then
        echo "  $name declares no rust-version"
    elif [ "$(printf '%s\n%s\n' "$theirs" "$msrv" | sort -V | tail -n 1)" != "$msrv" ]; then
        newer="$newer $name($theirs)"
    fi
done < <(cd "$tmp/client" && cargo metadata --format-version 1 --locked |
    grep -o '"manifest_path":"[^"]*"' | sed 's/^"manifest_path":"//; s/"$//' | sort -u)
if [ -n "$newer" ]; then
    echo "FAIL: dependencies that declare a rust-version above ours ($msrv):$newer"
    exit 1
fi
echo "ok: no dependency (optional ones included) declares a rust-version above $msrv"
