//! Runs every workload for every allocator, interleaved in one process, and writes the results.
//!
//! ```text
//! cargo run --release --example compare            # ~1 minute; writes docs/BENCHMARKS.md, docs/compare.svg
//! cargo run --release --example compare -- --quick # a few seconds; writes to target/compare-quick/
//! ```
//! Options: `--quick`, `--verbose` (adds page faults per operation), `--only small,mixed`,
//! `--rounds N`, `--out DIR` (`--only` and `--out` are for investigating: the docs need all).
//! `COMPARE_DUMP=1` prints every sample to stderr.
//!
//! Each round runs every workload for every allocator once (round-robin, the starting allocator
//! rotating each round), so slow drifts of the machine hit every allocator alike; the tables show
//! the median of the rounds. The workloads and allocators are in `benches/common/`.

#[path = "../benches/common/mod.rs"]
mod common;

use common::registry::{self, Entry};
use common::{Inputs, Workload};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

struct Options {
    quick: bool,
    verbose: bool,
    /// Run only these workloads (`--only small,mixed`); all by default.
    only: Option<Vec<Workload>>,
    rounds: usize,
    out: PathBuf,
}

fn options() -> Options {
    let mut quick = false;
    let mut verbose = false;
    let mut only = None;
    let mut rounds = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--verbose" => verbose = true,
            "--only" => {
                only = args
                    .next()
                    .map(|list| list.split(',').filter_map(Workload::from_name).collect())
            }
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()),
            "--out" => out = args.next().map(PathBuf::from),
            other => {
                eprintln!("unknown argument {other:?}; options: --quick, --verbose, --only W1,W2, --rounds N, --out DIR");
                std::process::exit(2);
            }
        }
    }
    Options {
        quick,
        verbose,
        only,
        rounds: rounds.unwrap_or(if quick { 4 } else { 16 }),
        out: out.unwrap_or_else(|| {
            PathBuf::from(if quick {
                "target/compare-quick"
            } else {
                "docs"
            })
        }),
    }
}

/// Medians and memory figures, indexed `[entry][workload]`.
struct Results {
    entries: Vec<Entry>,
    median_ns: Vec<[Option<f64>; 7]>,
    /// Median minor page faults per operation.
    faults: Vec<[Option<f64>; 7]>,
    /// (reserved, requested) bytes, where measured.
    memory: Vec<[Option<(usize, usize)>; 7]>,
    rounds: usize,
    /// `/proc/loadavg` when the run started (Linux).
    load: Option<String>,
}

impl Results {
    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    fn time(&self, name: &str, workload: Workload) -> Option<f64> {
        self.median_ns[self.index(name)?][workload.index()]
    }

    /// Time of `name` divided by the workload's reference column.
    fn vs_reference(&self, name: &str, workload: Workload) -> Option<f64> {
        Some(self.time(name, workload)? / self.time(registry::reference(workload), workload)?)
    }

    /// Memory ratio (reserved / requested).
    fn memory_ratio(&self, name: &str, workload: Workload) -> Option<f64> {
        let (reserved, requested) = self.memory[self.index(name)?][workload.index()]?;
        Some(reserved as f64 / requested.max(1) as f64)
    }
}

fn median(samples: &mut [f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    Some(if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    })
}

fn run(options: &Options) -> Results {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "));
    let inputs = Inputs::new(options.quick);
    let entries = registry::entries();
    let mut samples: Vec<[Vec<f64>; 7]> = entries.iter().map(|_| Default::default()).collect();
    let mut faults: Vec<[Vec<f64>; 7]> = entries.iter().map(|_| Default::default()).collect();
    let mut memory: Vec<[Option<(usize, usize)>; 7]> = entries.iter().map(|_| [None; 7]).collect();

    // Round 0 warms caches, the heap and the page-fault paths; it is not recorded.
    for round in 0..=options.rounds {
        for workload in Workload::ALL {
            if options
                .only
                .as_ref()
                .is_some_and(|only| !only.contains(&workload))
            {
                continue;
            }
            let count = entries.len();
            for k in 0..count {
                let i = (k + round) % count;
                let Some(run) = entries[i].run(workload) else {
                    continue;
                };
                eprint!(
                    "\r\x1b[2K[round {round}/{}] {:<8} {:<17}",
                    options.rounds,
                    workload.name(),
                    entries[i].name
                );
                let _ = std::io::stderr().flush();
                let sample = common::on_shifted_stack(round, || run(&inputs));
                if round > 0 {
                    samples[i][workload.index()].push(sample.ns_per_op);
                    faults[i][workload.index()].push(sample.faults_per_op);
                }
                if let Some(reserved) = sample.reserved {
                    memory[i][workload.index()] = Some((reserved, sample.requested));
                }
            }
        }
    }
    if std::env::var_os("COMPARE_DUMP").is_some() {
        for (i, e) in entries.iter().enumerate() {
            for w in Workload::ALL {
                let v = &samples[i][w.index()];
                if !v.is_empty() {
                    let cells: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                    eprintln!("{:16} {:8} {}", e.name, w.name(), cells.join(" "));
                }
            }
        }
    }
    eprint!("\r\x1b[2K[memory] mixed workload, growing arenas");
    for (i, entry) in entries.iter().enumerate() {
        if let Some(run) = entry.mixed_memory {
            let sample = run(&inputs);
            memory[i][Workload::Mixed.index()] = sample.reserved.map(|r| (r, sample.requested));
        }
        if let Some(run) = entry.vec_memory {
            let sample = run(&inputs);
            memory[i][Workload::VecGrowth.index()] = sample.reserved.map(|r| (r, sample.requested));
        }
    }
    eprintln!("\r\x1b[2Kdone: {} rounds", options.rounds);

    let medians = |all: &mut Vec<[Vec<f64>; 7]>| -> Vec<[Option<f64>; 7]> {
        all.iter_mut()
            .map(|per_workload| {
                let mut out = [None; 7];
                for (slot, s) in out.iter_mut().zip(per_workload.iter_mut()) {
                    *slot = median(s);
                }
                out
            })
            .collect()
    };
    Results {
        median_ns: medians(&mut samples),
        faults: medians(&mut faults),
        entries,
        memory,
        rounds: options.rounds,
        load,
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else if ns >= 10.0 {
        format!("{ns:.1} ns")
    } else {
        format!("{ns:.2} ns")
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {threads} logical CPUs ({})",
        std::env::consts::ARCH
    )
}

/// The tables as markdown: time, ours vs the original, memory, targets.
fn tables(results: &Results) -> String {
    let mut md = String::new();
    let workloads = Workload::ALL;

    md.push_str("### Time per operation (median), and ratio to the reference\n\n");
    md.push_str("| allocator |");
    for w in workloads {
        let _ = write!(md, " {} |", w.name());
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(workloads.len()));
    md.push('\n');
    for (i, entry) in results.entries.iter().enumerate() {
        let _ = write!(md, "| {} |", entry.name);
        for w in workloads {
            match results.median_ns[i][w.index()] {
                Some(ns) => {
                    let ratio = results.vs_reference(entry.name, w);
                    let _ = match ratio {
                        Some(r) => write!(md, " {} ({r:.2}x) |", fmt_ns(ns)),
                        None => write!(md, " {} |", fmt_ns(ns)),
                    };
                }
                None => md.push_str(" n/a |"),
            }
        }
        md.push('\n');
    }
    md.push_str(
        "\nRatio = time / bumpalo's time (threads and pages: / System's); lower is faster. \
         n/a: the allocator cannot do this workload (not thread-safe; not a page allocator).\n\n",
    );

    md.push_str("### Ours vs the original (libdd-alloc 1.0.0)\n\n");
    md.push_str("| ours | original |");
    for w in workloads {
        let _ = write!(md, " {} |", w.name());
    }
    md.push_str("\n|---|---|");
    md.push_str(&"---:|".repeat(workloads.len()));
    md.push('\n');
    for entry in &results.entries {
        let Some(original) = entry.original else {
            continue;
        };
        let _ = write!(md, "| {} | {} |", entry.name, original);
        for w in workloads {
            match (results.time(entry.name, w), results.time(original, w)) {
                (Some(ours), Some(theirs)) => {
                    let _ = write!(
                        md,
                        " {:.2}x ({:.1}x faster) |",
                        ours / theirs,
                        theirs / ours
                    );
                }
                _ => md.push_str(" n/a |"),
            }
        }
        md.push('\n');
    }
    md.push_str(
        "\nRatio = our time / the original's time. The original has no `reset`: in the reset \
         workload it is dropped and created again, which is what its users do. It has no \
         thread-safe arena either, so `SyncLinear` and `SyncChain` are compared with its `Cell` \
         arenas: they pay one atomic compare-exchange per allocation, which on this machine \
         costs more than the rest of the allocation (see `cargo bench --bench sync` for the \
         floor of one uncontended atomic read-modify-write). `VirtualArena` is compared with \
         the original's `ChainAllocator`.\n\n",
    );

    md.push_str("### Memory\n\n");
    md.push_str(
        "| allocator | mixed: reserved / requested | strings: reserved / requested | \
         vec: arena bytes / final Vec bytes |\n|---|---:|---:|---:|\n",
    );
    for entry in &results.entries {
        let cells: Vec<String> = [Workload::Mixed, Workload::Strings, Workload::VecGrowth]
            .into_iter()
            .map(|w| match results.memory_ratio(entry.name, w) {
                Some(r) => format!("{r:.3}"),
                None => "n/a".to_string(),
            })
            .collect();
        if cells.iter().all(|c| c == "n/a") {
            continue;
        }
        let _ = writeln!(md, "| {} | {} |", entry.name, cells.join(" | "));
    }
    md.push_str(
        "\nReserved = bytes the arena holds from its backing allocator (chunk headers, padding \
         and unused chunk tails included): `reserved_bytes()` for ours and the original, \
         `allocated_bytes_including_metadata()` for bumpalo, `stats().size()` for bump-scope, \
         a counting backing allocator for blink-alloc, `committed_bytes()` for `VirtualArena` \
         (measured on a fresh arena, in untimed runs for mixed and vec). mixed: the arenas start with a 64 KiB \
         chunk and grow through 50 passes of the mixed layouts. strings: 4 MiB chunk hint, \
         `VirtualAllocator` backing for ours and the original. vec: 64 KiB first chunk; \
         `SyncChain` never asks its backing allocator to grow a chunk in place (another thread \
         may be reading it), so a `Vec` that outgrows a chunk is copied. n/a: fixed-size arenas (sized by the caller) and `malloc` (no figure).\n\n",
    );

    md.push_str("### Targets\n\n| target | measured | met |\n|---|---|---|\n");
    for (target, measured, met) in targets(results) {
        let _ = writeln!(
            md,
            "| {target} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
    md.push('\n');
    md
}

/// Minor page faults per operation: near zero where a workload measures the allocator only.
fn fault_table(results: &Results) -> String {
    let mut md = String::from("### Minor page faults per operation (median)\n\n| allocator |");
    for w in Workload::ALL {
        let _ = write!(md, " {} |", w.name());
    }
    md.push_str("\n|---|");
    md.push_str(&"---:|".repeat(Workload::ALL.len()));
    md.push('\n');
    for (i, entry) in results.entries.iter().enumerate() {
        let _ = write!(md, "| {} |", entry.name);
        for w in Workload::ALL {
            match results.faults[i][w.index()] {
                Some(f) => {
                    let _ = write!(md, " {f:.4} |");
                }
                None => md.push_str(" n/a |"),
            }
        }
        md.push('\n');
    }
    md
}

/// The issue's targets, as (description, measured, met).
fn targets(r: &Results) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut ratio_target = |what: &str, value: Option<f64>, limit: f64, below: bool| {
        if let Some(v) = value {
            let met = if below { v <= limit } else { v >= limit };
            out.push((what.to_string(), format!("{v:.3}x"), met));
        }
    };
    let chain = "ours Chain";
    let linear = "ours Linear";
    for ours in [chain, linear] {
        ratio_target(
            &format!("small: {ours} <= 1.0x bumpalo's time"),
            r.vs_reference(ours, Workload::Small),
            1.0,
            true,
        );
    }
    for (ours, original) in [
        (chain, registry::UPSTREAM_CHAIN),
        (linear, registry::UPSTREAM_LINEAR),
    ] {
        for w in [Workload::Small, Workload::Mixed] {
            let speedup = r.time(original, w).zip(r.time(ours, w)).map(|(o, u)| o / u);
            ratio_target(
                &format!("{}: {ours} >= 1.5x faster than {original}", w.name()),
                speedup,
                1.5,
                false,
            );
        }
    }
    ratio_target(
        "vec: ours Chain arena bytes <= 1.3x final Vec bytes",
        r.memory_ratio(chain, Workload::VecGrowth),
        1.3,
        true,
    );
    for ours in [chain, linear] {
        ratio_target(
            &format!("reset: {ours} <= 1.0x bumpalo's time"),
            r.vs_reference(ours, Workload::Reset),
            1.0,
            true,
        );
    }
    let strings_time = r
        .time(chain, Workload::Strings)
        .zip(r.time(registry::UPSTREAM_CHAIN, Workload::Strings))
        .map(|(o, u)| o / u);
    ratio_target(
        "strings: ours Chain <= 1.0x upstream Chain's time",
        strings_time,
        1.0,
        true,
    );
    let strings_memory = r
        .memory_ratio(chain, Workload::Strings)
        .zip(r.memory_ratio(registry::UPSTREAM_CHAIN, Workload::Strings))
        .map(|(o, u)| o / u);
    ratio_target(
        "strings: ours Chain <= 1.0x upstream Chain's memory",
        strings_memory,
        1.0,
        true,
    );
    out
}

/// One colour per column: blues and teals for ours, greys for the original, warm colours for the
/// peers, so that the families read apart in the chart.
fn color(name: &str) -> &'static str {
    match name {
        "ours Linear" => "#08519c",
        "ours Chain" => "#4292c6",
        "ours SyncLinear" => "#006d5b",
        "ours SyncChain" => "#41b6a4",
        "ours Local" => "#00441b",
        "ours VirtualArena" => "#6a51a3",
        "ours Virtual" => "#74c476",
        "ours Page" => "#238b45",
        "upstream Linear" => "#525252",
        "upstream Chain" => "#969696",
        "upstream Virtual" => "#737373",
        "bumpalo" => "#f16913",
        "bump-scope" => "#cb181d",
        "blink" => "#e7298a",
        "blink Sync" => "#8c510a",
        "System" => "#d4b500",
        _ => "#000000",
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A grouped bar chart of the time ratios to each workload's reference, as SVG text.
///
/// The ratios span three orders of magnitude (a bump is 50 times faster than `malloc`; mapping
/// pages is 100 times slower than reusing them), so the axis is logarithmic and every bar starts
/// at the reference (1x): up is slower, down is faster.
fn svg(results: &Results) -> String {
    const WIDTH: f64 = 1120.0;
    const HEIGHT: f64 = 600.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 118.0;
    const BOTTOM: f64 = 58.0;
    // Powers of two shown on the axis: 1/4x to 256x.
    const LOW: i32 = -2;
    const HIGH: i32 = 8;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let span = f64::from(HIGH - LOW);
    let y = |ratio: f64| {
        let octaves = ratio.log2().clamp(f64::from(LOW), f64::from(HIGH));
        TOP + plot_h * (f64::from(HIGH) - octaves) / span
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">Time per operation relative to bumpalo (threads, pages: to System), log scale: lower is faster</text>"#
    );
    // Legend: the columns that have at least one bar, six to a row.
    let shown: Vec<usize> = (0..results.entries.len())
        .filter(|&i| {
            Workload::ALL
                .into_iter()
                .any(|w| results.vs_reference(results.entries[i].name, w).is_some())
        })
        .collect();
    for (k, &i) in shown.iter().enumerate() {
        let (col, row) = (k % 6, k / 6);
        let x = LEFT + col as f64 * 176.0;
        let ly = 46.0 + row as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{ly}">{}</text>"#,
            ly - 10.0,
            color(results.entries[i].name),
            x + 17.0,
            escape(results.entries[i].name)
        );
    }
    // Grid and axis.
    for power in LOW..=HIGH {
        let ratio = 2f64.powi(power);
        let ty = y(ratio);
        let (stroke, dash) = if power == 0 {
            ("#222222", r#" stroke-dasharray="6 3""#)
        } else {
            ("#e0e0e0", "")
        };
        let label = if power < 0 {
            format!("1/{}x", 1 << -power)
        } else {
            format!("{}x", 1 << power)
        };
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="{stroke}"{dash}/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            ty + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#444444">↑ slower than the reference</text><text x="{:.1}" y="{:.1}" font-size="11" fill="#444444">↓ faster</text>"##,
        LEFT + 6.0,
        TOP + 14.0,
        LEFT + 6.0,
        TOP + plot_h - 6.0
    );
    // Bars, from the 1x line.
    let group_w = plot_w / Workload::ALL.len() as f64;
    let base = y(1.0);
    for (g, w) in Workload::ALL.into_iter().enumerate() {
        let bars: Vec<(usize, f64)> = results
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| results.vs_reference(e.name, w).map(|r| (i, r)))
            .collect();
        let gx = LEFT + g as f64 * group_w;
        if g > 0 {
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##,
                TOP + plot_h
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            gx + group_w / 2.0,
            HEIGHT - BOTTOM + 20.0,
            w.name()
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#555555">vs {}</text>"##,
            gx + group_w / 2.0,
            HEIGHT - BOTTOM + 34.0,
            registry::reference(w)
        );
        if bars.is_empty() {
            continue;
        }
        let bar_w = (group_w * 0.86) / bars.len() as f64;
        for (k, &(i, ratio)) in bars.iter().enumerate() {
            let x = gx + group_w * 0.07 + k as f64 * bar_w;
            let top = y(ratio);
            let (from, to) = if top < base { (top, base) } else { (base, top) };
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{from:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} ({}): {ratio:.2}x</title></rect>"#,
                (bar_w - 1.0).max(1.0),
                (to - from).max(2.0),
                color(results.entries[i].name),
                escape(results.entries[i].name),
                w.name()
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333333"/>"##,
        TOP + plot_h
    );
    s.push_str("</svg>\n");
    s
}

fn markdown(results: &Results, options: &Options, tables: &str) -> String {
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let rustc = command_output(
        &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string()),
        &["--version"],
    )
    .unwrap_or_default();
    let command = if options.quick {
        "cargo run --release --example compare -- --quick"
    } else {
        "cargo run --release --example compare"
    };
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("![time relative to bumpalo](compare.svg)\n\n");
    let _ = writeln!(md, "- Date: {date}");
    let _ = writeln!(md, "- Machine: {}", machine());
    if let Some(load) = &results.load {
        let _ = writeln!(
            md,
            "- Load average (1, 5, 15 min) when the run started: {load} (other processes share the cores: \
             single samples vary by 2x and more; the medians of the interleaved rounds are what is compared)"
        );
    }
    let _ = writeln!(md, "- Compiler: {rustc}");
    let _ = writeln!(
        md,
        "- Command: `{command}` ({} rounds, all allocators interleaved in one process; medians)",
        results.rounds
    );
    md.push_str(
        "- Peers: libdd-alloc 1.0.0 (\"upstream\", the original), bumpalo, bump-scope, \
         blink-alloc, the system allocator (glibc `malloc`).\n\n",
    );
    md.push_str(tables);
    md.push_str("### Workloads\n\n");
    for w in Workload::ALL {
        let _ = writeln!(md, "- **{}**: {}.", w.name(), w.describe());
    }
    md.push_str(
        "\nEach repetition creates the arena, does the work and drops it (the time includes \
         both). Chained arenas are backed by the system allocator in the CPU workloads, so \
         that fresh arenas reuse warm heap memory rather than measuring page faults; the string \
         table uses `VirtualAllocator` for ours and the original, as a profiler does. \
         `VirtualArena` maps its own memory, so in the CPU workloads (small, mixed, vec, reset) \
         each thread reuses one warm arena (reset between repetitions, its committed pages \
         kept) for the same reason; its string table uses a fresh 1 GiB reservation per \
         repetition, commits and page faults included. threads: two threads allocate from one \
         shared arena (`SyncLinear`, `SyncChain`, blink's `SyncBlinkAlloc`; `malloc` for \
         System), or each through its own handle on one shared arena (`ours Local`: a \
         `LocalHandle` on a `SyncChainAllocator`; `blink`: `SyncBlinkAlloc::local()`). pages: `VirtualAllocator` and `PageAllocator` (default options) map and \
         unmap each block; `malloc` reuses its heap. small, \
         mixed and reset fit in the arena's first chunk: they measure the fast path. Every \
         allocation has its first byte written and its pointer passed through \
         `std::hint::black_box`. `System` frees every block (on reset or drop) and its time \
         includes that. The code is in `benches/common/`; `cargo bench` runs the same \
         workloads under divan.\n\n",
    );
    md.push_str("### Instructions per allocation (callgrind)\n\n");
    match std::fs::read_to_string("docs/callgrind.md") {
        // Written by `scripts/callgrind.sh`; shown here without its title.
        Ok(callgrind) => {
            let body = callgrind
                .lines()
                .skip_while(|l| l.starts_with("# ") || l.is_empty());
            for line in body {
                md.push_str(line);
                md.push('\n');
            }
        }
        Err(_) => md.push_str("Run `scripts/callgrind.sh` to measure them.\n"),
    }
    md
}

fn main() -> std::io::Result<()> {
    let options = options();
    // A thread's stack is a fresh mapping: the same addresses (modulo a page) in every run,
    // unlike the main thread's randomised one. See `on_shifted_stack`.
    let results = std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(move || (run(&options), options))?
        .join()
        .map_err(|_| std::io::Error::other("benchmark thread panicked"))?;
    let (results, options) = results;
    let tables = tables(&results);
    println!("{tables}");
    if options.verbose {
        println!("{}", fault_table(&results));
    }
    std::fs::create_dir_all(&options.out)?;
    let md_path = options.out.join("BENCHMARKS.md");
    let svg_path = options.out.join("compare.svg");
    std::fs::write(&md_path, markdown(&results, &options, &tables))?;
    std::fs::write(&svg_path, svg(&results))?;
    eprintln!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}
