#!/usr/bin/env bash
# Signal safety by symbols, checked the way Datadog's crash tracker checks its own signal path
# (libdatadog's tools/check_signal_safe_symbols.sh: `nm -u` over the rlibs of the crates its
# handler uses, failing on a banned list). A crash tracker that adopts libdd-alloc would run that
# over us and our dependencies, so we run a stricter one first.
#
# For each TARGET (default: the host), in release, it builds the library twice: with
# `--no-default-features` plus every optional Allocator trait (the `no_std` build a signal
# handler's crate takes) and with the default features (`std`). It takes the rlib of this crate
# and of every normal (non-dev, non-build) dependency that build links, as `cargo tree -e normal`
# lists them (on a foreign target the standard library is built with nightly `-Zbuild-std`; its
# rlibs are not our dependencies and are skipped), and fails if any undefined symbol (`nm -u`,
# demangled) is on the banned list below. A whole rlib is scanned, not the code a handler
# reaches: code that only runs at set-up is held to the handler's standard. What a target or a
# feature needs beyond that is an exception named below with its reason (README.md, "Signal
# safety", lists them too); an exception is scoped to one rlib and only the symbols it names.
#
# Panics: a panic in a handler is an abort (after std's panic machinery, which allocates), so
# this crate's own rlib may not reference any panic entry point, at all. A dependency's rlib may
# (rustix's has `core::panicking::panic` in code libdd-alloc never calls, such as its
# auxiliary-vector parser): whether a panic is *reachable* from an allocation path is what
# scripts/no_panic.sh proves, with every entry point linked under fat LTO, dependencies included.
#   scripts/signal-safe-symbols.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cross-suite.sh # have_nightly_build_std

host=$(rustc -vV | sed -n 's/^host: //p')
[ $# -gt 0 ] || set -- "$host"

# Banned in every scanned rlib, matched against whole demangled names: C symbols exactly, Rust
# ones also as the last segment of a path (so `__rustc::__rust_alloc`, the shim symbol that
# rustc now mangles, and that Datadog's pattern does not match, is caught too). Theirs: malloc calloc realloc free posix_memalign mmap pthread_mutex_lock/unlock
# pthread_cond_* __rust_alloc getenv dlsym getauxval fork posix_spawn pthread_atfork syslog
# abort __libc_*. Ours adds the rest of the heap and of Rust's global allocator, the libc
# wrappers of every mapping call (we make them as raw syscalls: a wrapper can be interposed and
# writes errno), the dynamic loader and lazy TLS (both take the loader's lock; __tls_get_addr may
# allocate), every pthread lock, stdio and strerror (may allocate and lock), and process exits.
banned_c='malloc|calloc|realloc|reallocarray|free|cfree|posix_memalign|aligned_alloc|memalign'
banned_c+='|valloc|pvalloc|malloc_usable_size|brk|sbrk'
banned_c+='|mmap|mmap64|munmap|mremap|mprotect|madvise|posix_madvise|mlock|mlock2|munlock'
banned_c+='|dlopen|dlmopen|dlclose|dlsym|dlvsym|dladdr|dladdr1|dlinfo|dl_iterate_phdr|getauxval'
banned_c+='|__tls_get_addr|___tls_get_addr'
banned_c+='|pthread_mutex_[a-z_]+|pthread_rwlock_[a-z_]+|pthread_cond_[a-z_]+|pthread_once'
banned_c+='|pthread_atfork|pthread_key_create|pthread_create|sem_wait|sem_timedwait'
banned_c+='|getenv|secure_getenv|setenv|unsetenv|putenv|syslog|vsyslog|openlog'
banned_c+='|printf|fprintf|vfprintf|dprintf|puts|fputs|fwrite|fflush|fopen|fclose|perror'
banned_c+='|strerror|strerror_r|__xpg_strerror_r|strerror_l'
banned_c+='|fork|vfork|posix_spawn[a-z_]*|system|popen|exit|atexit|__cxa_atexit|abort'
banned_c+='|__libc_[a-z_]+'
banned_rust='__rust_alloc|__rust_alloc_zeroed|__rust_dealloc|__rust_realloc'
banned_rust+='|__rust_alloc_error_handler|__rust_no_alloc_shim_is_unstable[a-z0-9_]*'
banned_rust+='|__rdl_[a-z_]+|__rg_[a-z_]+|handle_alloc_error'
banned="^($banned_c)$|^(.*::)?($banned_rust)$"
# Also banned in libdd-alloc's own rlib: every panic and unwinding entry point.
banned_own='(^|::)(panicking|panic_[a-z_]+|begin_panic[a-z_]*|rust_begin_unwind|rust_panic'
banned_own+='|unwrap_failed|expect_failed|[a-z_]+_index_fail|_Unwind_[A-Za-z_]+'
banned_own+='|rust_eh_personality)(::|<|$)'

# exception TARGET FEATURES CRATE: prints on stdout the banned symbols CRATE's rlib may reference
# in that build, as an extended regular expression (nothing: none), and on stderr the reason,
# which the scan shows when the exception is used.
exception() {
    local target=$1 features=$2 crate=$3
    case "$crate" in
    errno)
        # Every Unix target: errno's `Display` for `Errno` formats the message with strerror_r.
        # libdd-alloc calls only `errno::errno` and `set_errno` (src/os/unix.rs), and on Linux
        # x86, x86_64, arm, aarch64 and riscv64 not even those (rustix makes raw syscalls).
        echo '__xpg_strerror_r|strerror_r'
        echo "errno: __xpg_strerror_r/strerror_r only in errno's Display impl, which libdd-alloc never calls" >&2
        ;;
    rustix)
        case "$target" in
        i686-* | i586-*)
            # 32-bit x86 Linux: rustix's first syscall in the process looks up the vDSO's
            # syscall entry through libc's getauxval, found with dlsym (the `use-libc-auxv`
            # feature, turned on for this target only in Cargo.toml). Calling
            # `libdd_alloc::os::page_size()` once before installing a handler makes that
            # first syscall happen outside it.
            echo 'dlsym|getauxval'
            echo "rustix ($target): dlsym/getauxval for the vDSO lookup of its first syscall; call os::page_size() before installing a handler" >&2
            ;;
        esac
        ;;
    allocator_api2)
        if [ "$features" = default ]; then
            # Our `std` feature turns on allocator-api2's `std` (and so its `alloc`), which
            # compiles allocator-api2's `Global` allocator: it calls Rust's global allocator and
            # handle_alloc_error. libdd-alloc's arenas call only the backing allocator a user
            # passes them; a signal handler's crate builds without `std` (checked above).
            echo '__rust_alloc|__rust_no_alloc_shim_is_unstable[a-z0-9_]*|handle_alloc_error|__rust_alloc_zeroed|__rust_dealloc|__rust_realloc'
            echo "allocator_api2 (std feature): the Global allocator of its alloc feature; build without std for a handler" >&2
        fi
        ;;
    esac
}

# rlibs TARGET CARGO_ARGS...: prints "crate path" for this crate's rlib and each normal
# dependency's, after building them.
rlibs() {
    local target=$1
    shift
    local cargo=(cargo build --release --lib --target "$target" "$@")
    if [ "$target" != "$host" ]; then
        cargo=(cargo +nightly build -Zbuild-std --release --lib --target "$target" "$@")
    fi
    # name@version of every normal dependency (and of this crate) for this target and features.
    local wanted
    wanted=$(cargo tree -e normal --target "$target" "$@" --prefix none -f '{p}' |
        awk '{ sub(/^v/, "", $2); print $1 "@" $2 }' | sort -u)
    "${cargo[@]}" --quiet --message-format=json |
        grep '"reason":"compiler-artifact"' |
        grep -v '"rustc-dep-of-std"' |
        while IFS= read -r line; do
            local id name version rlib
            id=$(sed -n 's/.*"package_id":"\([^"]*\)".*/\1/p' <<<"$line")
            rlib=$(grep -o '"[^"]*\.rlib"' <<<"$line" | tr -d '"' || true)
            [ -n "$rlib" ] || continue
            # `...#name@version`, or `...#version` when the name is the path's last component.
            version=${id##*[#@]}
            name=$(sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*/\1/p' <<<"$line")
            if grep -qxF "${name//_/-}@$version" <<<"$wanted" || grep -qxF "$name@$version" <<<"$wanted"; then
                echo "$name $rlib"
            fi
        done
}

# The patterns catch what they must and nothing a clean rlib has (a control, like
# scripts/no_panic.sh's): a pattern that matched nothing would prove nothing.
for symbol in dlsym malloc getauxval mmap64 pthread_mutex_lock __libc_single_threaded \
    __rustc::__rust_alloc __rust_dealloc alloc::alloc::handle_alloc_error; do
    grep -qE "$banned" <<<"$symbol" || { echo "FAILED: the banned list misses $symbol"; exit 1; }
done
for symbol in core::panicking::panic core::option::unwrap_failed _Unwind_Resume \
    core::slice::index::slice_index_fail rust_eh_personality; do
    grep -qE "$banned_own" <<<"$symbol" || { echo "FAILED: the panic list misses $symbol"; exit 1; }
done
for symbol in memcpy memset bcmp strlen __errno_location freelist rustix::backend::mm::syscalls::mmap \
    'core::fmt::write' '<usize as core::fmt::Display>::fmt' rustix::backend::vdso_wrappers::init_syscall; do
    if grep -qE "$banned" <<<"$symbol" || grep -qE "$banned_own" <<<"$symbol"; then
        echo "FAILED: the banned lists match $symbol"
        exit 1
    fi
done

status=0
for target in "$@"; do
    if [ "$target" != "$host" ] && ! have_nightly_build_std; then
        echo "skipped: $target (its standard library is built with nightly -Zbuild-std)"
        continue
    fi
    for features in no-std default; do
        case $features in
        no-std) args=(--no-default-features --features allocator-api2-03,allocator-api2-04) ;;
        default) args=() ;;
        esac
        scanned=()
        while read -r crate rlib; do
            scanned+=("$crate")
            # nm must read every object: a binutils without the target's format would read none,
            # and find nothing. "no symbols" (the metadata members) is no error.
            nm_errors=$(nm -u "$rlib" 2>&1 >/dev/null | grep -v ': no symbols$' || true)
            if [ -n "$nm_errors" ]; then
                echo "FAILED: $target $features: nm cannot read $rlib:"
                sed 's/^/    /' <<<"$nm_errors"
                status=1
            fi
            symbols=$(nm -u -C "$rlib" 2>/dev/null | awk '{ $1 = ""; sub(/^ /, ""); print }' |
                sed 's/@.*//' | sort -u)
            hits=$(grep -E "$banned" <<<"$symbols" || true)
            if [ "$crate" = libdd_alloc ]; then
                hits+=$'\n'$(grep -E "$banned_own" <<<"$symbols" || true)
            fi
            allowed=$(exception "$target" "$features" "$crate" 2>/dev/null)
            if [ -n "$allowed" ]; then
                excused=$(grep -E "^(.*::)?($allowed)$" <<<"$hits" || true)
                hits=$(grep -vE "^(.*::)?($allowed)$" <<<"$hits" || true)
                if [ -n "$excused" ]; then
                    exception "$target" "$features" "$crate" 2>&1 >/dev/null |
                        sed "s/^/  $target $features: exception: /"
                fi
            fi
            hits=$(sed '/^$/d' <<<"$hits")
            if [ -n "$hits" ]; then
                echo "FAILED: $target $features: $crate ($rlib) references banned symbols:"
                sed 's/^/    U /' <<<"$hits"
                status=1
            fi
        done < <(rlibs "$target" "${args[@]}")
        if [ "${#scanned[@]}" -lt 2 ]; then
            echo "FAILED: $target $features: found ${#scanned[@]} rlib(s); the scan proves nothing"
            status=1
        else
            echo "$target $features: ${#scanned[@]} rlibs scanned: ${scanned[*]}"
        fi
    done
done
[ "$status" -eq 0 ] && echo "signal-safe-symbols: no banned symbol in any scanned rlib (${*})"
exit "$status"
