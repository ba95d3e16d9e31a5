//! String interning on an arena: a profiler's symbol table.
//!
//! Each distinct symbol name is copied once into a `ChainAllocator<VirtualAllocator>` (memory
//! straight from the OS, never from malloc); a `hashbrown::HashSet<&str>` indexes the arena's
//! strings, so interning the same name again returns the same `&str`. Feeds 100,000 symbol names
//! that look like the ones a Rust profiler sees (generated from word lists with a fixed-seed PRNG,
//! so with many repeats) and prints how many bytes the table used.
//!
//! Run with `cargo run --release --example string_table`.

use hashbrown::HashSet;
use libdd_alloc::{AllocError, Arena, ChainAllocator, VirtualAllocator};
use std::fmt::Write;

/// Interned strings: each distinct string lives once in the arena.
struct StringTable<'a> {
    arena: &'a ChainAllocator<VirtualAllocator>,
    index: HashSet<&'a str>,
    bytes_requested: usize,
}

impl<'a> StringTable<'a> {
    fn new(arena: &'a ChainAllocator<VirtualAllocator>) -> Self {
        Self {
            arena,
            index: HashSet::new(),
            bytes_requested: 0,
        }
    }

    /// The arena copy of `s`, made on first sight.
    fn intern(&mut self, s: &str) -> Result<&'a str, AllocError> {
        if let Some(&interned) = self.index.get(s) {
            return Ok(interned);
        }
        let interned: &'a str = self.arena.try_alloc_str(s)?;
        self.bytes_requested += s.len();
        self.index.insert(interned);
        Ok(interned)
    }
}

/// SplitMix64: a small, fixed-seed generator, so every run sees the same names.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'w>(&mut self, words: &[&'w str]) -> &'w str {
        words[(self.next() % words.len() as u64) as usize]
    }
}

const CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "tokio",
    "hyper",
    "serde",
    "serde_json",
    "regex",
    "rayon",
    "futures",
    "tracing",
    "axum",
    "tower",
    "bytes",
    "hashbrown",
    "libdd_profiling",
    "libdd_alloc",
    "prost",
];
const MODULES: &[&str] = &[
    "runtime",
    "collections",
    "io",
    "net",
    "sync",
    "task",
    "fmt",
    "de",
    "ser",
    "codec",
    "proto",
    "scheduler",
    "worker",
    "internals",
    "raw",
    "map",
    "vec",
    "string",
    "time",
    "park",
    "util",
    "exporter",
    "pprof",
    "intern",
    "frame",
    "signal",
    "thread",
    "buf",
    "client",
    "server",
];
const TYPES: &[&str] = &[
    "HashMap",
    "Vec",
    "String",
    "Runtime",
    "Handle",
    "JoinHandle",
    "Mutex",
    "RwLock",
    "Sender",
    "Receiver",
    "Deserializer",
    "Serializer",
    "Request",
    "Response",
    "Body",
    "Builder",
    "Context",
    "Waker",
    "RawTable",
    "Profile",
    "StringTable",
    "Sample",
    "Location",
    "Function",
    "Arc",
];
const METHODS: &[&str] = &[
    "get",
    "insert",
    "remove",
    "push",
    "pop",
    "poll",
    "poll_next",
    "block_on",
    "spawn",
    "run",
    "new",
    "with_capacity",
    "deserialize_any",
    "serialize_field",
    "read",
    "write",
    "flush",
    "lock",
    "send",
    "recv",
    "drop",
    "clone",
    "fmt",
    "next",
    "call",
    "intern",
    "add_sample",
    "reserve_rehash",
    "find",
    "entry",
    "into_iter",
    "from_str",
    "parse",
    "encode",
    "decode",
];
const TRAITS: &[&str] = &[
    "Iterator", "Future", "Drop", "Clone", "Debug", "Display", "Read", "Write", "Service", "Fn",
];
const ARGS: &[&str] = &[
    "u8", "u32", "u64", "usize", "String", "&str", "Vec<u8>", "Bytes",
];

/// One symbol name, in one of the shapes `rustc-demangle` produces.
fn symbol(rng: &mut SplitMix, out: &mut String) {
    out.clear();
    let (krate, module, ty, method) = (
        rng.pick(CRATES),
        rng.pick(MODULES),
        rng.pick(TYPES),
        rng.pick(METHODS),
    );
    // `write!` into a `String` cannot fail.
    let _ = match rng.next() % 6 {
        0 => write!(out, "{krate}::{module}::{method}"),
        1 | 2 => write!(out, "{krate}::{module}::{ty}::{method}"),
        3 => write!(
            out,
            "{krate}::{module}::{ty}<{}, {}>::{method}",
            rng.pick(ARGS),
            rng.pick(ARGS)
        ),
        4 => write!(
            out,
            "<{krate}::{module}::{ty} as {}::{}>::{method}",
            rng.pick(CRATES),
            rng.pick(TRAITS)
        ),
        _ => write!(
            out,
            "{krate}::{module}::{}::{ty}::{method}::{{{{closure}}}}",
            rng.pick(MODULES)
        ),
    };
}

fn main() -> Result<(), AllocError> {
    const NAMES: usize = 100_000;
    let arena = ChainAllocator::new_in(4 << 20, VirtualAllocator {})?;
    let mut table = StringTable::new(&arena);
    let mut rng = SplitMix(0x5EED_D06D_0000_0001);
    let mut name = String::new();
    let mut bytes_seen = 0;
    let mut first_seen: Option<(String, &str)> = None;
    for _ in 0..NAMES {
        // Profiles repeat: 70% of samples hit one of 5,000 hot functions.
        if rng.next() % 10 < 7 {
            symbol(&mut SplitMix(rng.next() % 5_000), &mut name);
        } else {
            symbol(&mut rng, &mut name);
        }
        bytes_seen += name.len();
        let interned = table.intern(&name)?;
        match &first_seen {
            None => first_seen = Some((name.clone(), interned)),
            // Interning again hands back the very same bytes.
            Some((first, same)) if *first == name => assert!(std::ptr::eq(*same, interned)),
            Some(_) => {}
        }
    }

    println!("symbol names interned:     {NAMES}");
    println!("bytes of names fed in:     {bytes_seen}");
    println!("unique names:              {}", table.index.len());
    println!("bytes requested (unique):  {}", table.bytes_requested);
    println!("arena used_bytes:          {}", arena.used_bytes());
    println!("arena reserved_bytes:      {}", arena.reserved_bytes());
    println!(
        "arena overhead:            {} bytes (chunk header)",
        arena.used_bytes() - table.bytes_requested
    );
    Ok(())
}
