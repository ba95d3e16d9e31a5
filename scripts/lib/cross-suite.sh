# Shared by scripts/test-i686.sh and scripts/test-aarch64.sh: installs Debian packages, builds the
# whole suite once for a foreign target with nightly -Zbuild-std (rustup cannot download target
# standard libraries here), runs it, and prints how many tests ran and passed. Source it, then
# call `need_packages` and `run_suite`.
set -euo pipefail

# need_packages PKG...: installs the Debian packages that are missing (quietly, idempotent).
# Returns 1, with a message, when they are missing and cannot be installed.
need_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "installing ${missing[*]}"
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null ||
        { echo "cannot install ${missing[*]}"; return 1; }
}

# have_nightly_build_std: nightly with rust-src (which -Zbuild-std compiles std from).
have_nightly_build_std() {
    cargo +nightly --version >/dev/null 2>&1 || { echo "no nightly toolchain"; return 1; }
    rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' ||
        rustup +nightly component add rust-src >/dev/null 2>&1 ||
        { echo "cannot install rust-src"; return 1; }
}

# run_suite TARGET: one release build (overflow checks and debug assertions on, std included,
# since 32-bit size arithmetic and weak memory orderings are what these targets are for) of the
# library's unit tests, every integration test and every example, then the unit and integration
# tests and the doc tests, run with the runner in CARGO_TARGET_<TRIPLE>_RUNNER if set. Prints the
# totals; fails if any test failed.
run_suite() {
    local target=$1 start log
    start=$(date +%s)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/$target"
    export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
    local cargo=(cargo +nightly test --release -Zbuild-std --target "$target")
    log=$(mktemp)
    "${cargo[@]}" --no-run --lib --tests --examples
    echo "built in $(($(date +%s) - start)) s"
    local status=0
    "${cargo[@]}" --no-fail-fast --lib --tests 2>&1 | tee "$log" || status=1
    "${cargo[@]}" --doc 2>&1 | tee -a "$log" || status=1
    # libtest binaries print "test result: ..."; tests/sync_signals.rs (its own harness) prints
    # one "...: no overlap, no corruption" line per storm, and stops at the first failure.
    awk '
        /^test result:/ { for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed/) passed += $i; if ($(i+1) ~ /^failed/) failed += $i;
            if ($(i+1) ~ /^ignored/) ignored += $i } }
        /no overlap, no corruption$/ { passed++ }
        END { printf "'"$target"': %d tests run, %d passed, %d failed, %d ignored\n",
              passed + failed, passed, failed, ignored }' "$log"
    rm -f "$log"
    echo "$target: suite done in $(($(date +%s) - start)) s"
    return $status
}
