#!/usr/bin/env bash
# What a user's Cargo.lock gains from depending on this crate: a throwaway package in a temp dir
# with `libdd-alloc = { path = <this checkout> }`, resolved for every target. Fails if a
# dev-only tool (loom and the crates only it pulls in) reaches it, and prints what it resolves.
# Needs crates.io (the index only: nothing is built).
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
