//! Rate deck benchmark: generates decks of 1,000,000 prefixes (one carrier per prefix, then
//! three), and prints the load time, the heap bytes per prefix (counted by the allocator) and
//! the time of a longest-prefix lookup. Run by `make bench-ratedeck`; prints figures, asserts
//! nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tandem_ratedeck::RateDeck;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// Counting allocations needs a global allocator, which is an unsafe trait; both methods only
// forward to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Time this thread has spent on a CPU (Linux `/proc/thread-self/schedstat`): on a shared
/// machine, wall time counts the other processes' turns too.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f();
    (out, wall.elapsed(), cpu_time() - cpu)
}

fn seconds(times: &[Duration]) -> String {
    times
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A small deterministic generator (xorshift64*), so every run measures the same deck.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PREFIXES: usize = 1_000_000;
const LOOKUPS: usize = 2_000_000;
const CARRIERS: usize = 40;

/// Distinct E.164 prefixes of 3 to 11 digits after the `+`, as in carriers' decks.
fn prefixes(rng: &mut Rng) -> Vec<String> {
    let mut seen = HashSet::with_capacity(PREFIXES);
    let mut out = Vec::with_capacity(PREFIXES);
    while out.len() < PREFIXES {
        let len = 3 + rng.below(9) as u32;
        let first = 1 + rng.below(9);
        let rest = rng.below(10u64.pow(len - 1));
        let prefix = format!("+{first}{rest:0width$}", width = (len - 1) as usize);
        if seen.insert(prefix.clone()) {
            out.push(prefix);
        }
    }
    out
}

fn deck_text(prefixes: &[String], carriers_per_prefix: usize, rng: &mut Rng) -> String {
    let mut text = String::with_capacity(prefixes.len() * carriers_per_prefix * 32);
    text.push_str("prefix,trunk,cost,priority,weight\n");
    for prefix in prefixes {
        let first = rng.below(CARRIERS as u64) as usize;
        for i in 0..carriers_per_prefix {
            let carrier = (first + i * 7) % CARRIERS;
            let cost = rng.below(200_000);
            let _ = writeln!(
                text,
                "{prefix},carrier-{carrier},0.{cost:06},{},{}",
                1 + rng.below(3),
                1 + rng.below(100)
            );
        }
    }
    text
}

/// Called numbers, 12 digits after the `+`, packed in one text with their end offsets: most
/// extend a prefix of the deck, one in ten (national format, no `+`) matches nothing.
fn numbers(prefixes: &[String], rng: &mut Rng) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(LOOKUPS * 13);
    let mut ends = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS {
        if i % 10 == 9 {
            let _ = write!(text, "0{:011}", rng.below(100_000_000_000));
        } else {
            let prefix = &prefixes[rng.below(prefixes.len() as u64) as usize];
            text.push_str(prefix);
            for _ in prefix.len() - 1..12 {
                text.push(char::from(b'0' + rng.below(10) as u8));
            }
        }
        ends.push(text.len());
    }
    (text, ends)
}

fn run(carriers_per_prefix: usize) {
    let mut rng = Rng(0x7A9D_E3C1_5B2F_0481);
    let prefixes = prefixes(&mut rng);
    let text = deck_text(&prefixes, carriers_per_prefix, &mut rng);
    let (numbers, ends) = numbers(&prefixes, &mut rng);
    println!(
        "deck: {} prefixes, {} carrier(s) per prefix, {} rows, {:.1} MB of CSV",
        PREFIXES,
        carriers_per_prefix,
        PREFIXES * carriers_per_prefix,
        text.len() as f64 / 1e6
    );

    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let mut deck = None;
    let mut bytes = 0;
    let mut peak = 0;
    for _ in 0..3 {
        drop(deck.take());
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let (parsed, wall, cpu) = timed(|| RateDeck::parse(&text));
        walls.push(wall);
        cpus.push(cpu);
        bytes = LIVE.load(Ordering::Relaxed) - before;
        peak = PEAK.load(Ordering::Relaxed) - before;
        deck = Some(parsed.expect("the generated deck is valid"));
    }
    let deck = deck.expect("loaded");
    assert_eq!(deck.prefixes(), PREFIXES);
    let best = cpus.iter().min().copied().unwrap_or_default();
    println!(
        "  load: {:.2} s of CPU, best of 3 (CPU {} s; wall {} s)",
        best.as_secs_f64(),
        seconds(&cpus),
        seconds(&walls)
    );
    println!(
        "  memory: {:.1} bytes per prefix ({:.1} MB held by the table; {:.1} MB peak while loading, the CSV text aside; the deck's own estimate {:.1} bytes per prefix)",
        bytes as f64 / PREFIXES as f64,
        bytes as f64 / 1e6,
        peak as f64 / 1e6,
        deck.heap_bytes() as f64 / PREFIXES as f64
    );

    // Warm up once, then time every lookup of the list, three times.
    let mut hits = 0usize;
    let pass = |hits: &mut usize| {
        let mut start = 0;
        for &end in &ends {
            let number = &numbers[start..end];
            start = end;
            if let Some(found) = deck.lookup(black_box(number)) {
                *hits += 1;
                black_box(found.routes().next());
            }
        }
    };
    pass(&mut hits);
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let ((), wall, cpu) = timed(|| pass(&mut hits));
        walls.push(wall.as_nanos() as f64 / LOOKUPS as f64);
        cpus.push(cpu.as_nanos() as f64 / LOOKUPS as f64);
    }
    let per = |v: &[f64]| {
        v.iter()
            .map(|ns| format!("{ns:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let best = cpus.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "  lookup: {best:.0} ns of CPU per lookup, best of 3 passes (CPU {} ns; wall {} ns) over {} numbers in random order ({:.0}% match a prefix; longest match plus its cheapest row)",
        per(&cpus),
        per(&walls),
        LOOKUPS,
        hits as f64 / (4 * LOOKUPS) as f64 * 100.0
    );
}

fn main() {
    run(1);
    run(3);
}
