//! The allocator's view of the process's memory, and giving freed memory back.
//!
//! RSS alone cannot tell a leak from memory the allocator keeps after a burst: glibc's malloc
//! holds on to freed chunks (per thread arena) until the top of a heap is free, so a broker
//! outage that sends tens of thousands of messages through the spool and the reconnect can
//! leave RSS a step higher although nothing is still allocated. Every 10 s this samples
//! `mallinfo2` into two gauges, bytes in use and freed bytes the allocator still holds; when
//! more than [`TRIM_ABOVE_BYTES`] is held free it calls `malloc_trim` (at most once a
//! minute), which hands the free pages of every arena back to the OS.
//!
//! Only glibc has these calls; elsewhere the gauges stay 0 and nothing is trimmed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the allocator is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Freed memory worth a trim. Below this the pages are likely reused by the next burst, and
/// trimming would only move them back and forth.
pub const TRIM_ABOVE_BYTES: u64 = 32 * 1024 * 1024;
/// A trim leaves the allocator's bookkeeping unchanged (the pages are dropped with
/// `MADV_DONTNEED`, the chunks stay free), so the free figure stays high after one; this
/// spaces them out.
const TRIM_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// What the allocator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapUsage {
    /// Bytes handed out and not yet freed (small chunks plus mmapped large blocks).
    pub in_use: u64,
    /// Freed bytes the allocator keeps for reuse, resident or not.
    pub free: u64,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    use super::HeapUsage;

    pub fn usage() -> Option<HeapUsage> {
        // SAFETY: mallinfo2 takes no arguments, reads the allocator's bookkeeping under its
        // locks, and returns a plain struct by value (glibc ≥ 2.33).
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUsage {
            in_use: (info.uordblks + info.hblkhd) as u64,
            free: info.fordblks as u64,
        })
    }

    pub fn trim() {
        // SAFETY: malloc_trim only releases free pages of the allocator's own arenas; a pad of
        // 0 keeps nothing extra at the top. It is thread-safe like malloc itself.
        unsafe { libc::malloc_trim(0) };
    }

    pub fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    use super::HeapUsage;

    pub fn usage() -> Option<HeapUsage> {
        None
    }

    pub fn trim() {}

    pub fn resident_bytes() -> Option<u64> {
        None
    }
}

/// What one sample found and did.
#[derive(Debug, Clone, Copy)]
struct Sample {
    usage: HeapUsage,
    /// Resident bytes the trim gave back, if it trimmed.
    released: Option<u64>,
}

/// Samples the allocator into `metrics`, and trims when enough freed memory is held, until
/// `shutdown`.
pub async fn run(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_trim: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let may_trim = last_trim.is_none_or(|at| at.elapsed() >= TRIM_AT_MOST_EVERY);
        // mallinfo2 and malloc_trim walk the arenas under their locks: off the async workers.
        let Ok(Some(sample)) = tokio::task::spawn_blocking(move || sample(may_trim)).await else {
            continue;
        };
        metrics.heap_in_use_bytes.set(gauge(sample.usage.in_use));
        metrics.heap_free_bytes.set(gauge(sample.usage.free));
        if let Some(released) = sample.released {
            last_trim = Some(Instant::now());
            metrics.heap_trims.inc();
            metrics.heap_trim_released_bytes.inc_by(released);
            tracing::debug!(
                free = sample.usage.free,
                released,
                "returned freed heap memory to the OS"
            );
        }
    }
}

fn sample(may_trim: bool) -> Option<Sample> {
    let usage = sys::usage()?;
    if !may_trim || usage.free <= TRIM_ABOVE_BYTES {
        return Some(Sample {
            usage,
            released: None,
        });
    }
    let before = sys::resident_bytes().unwrap_or(0);
    sys::trim();
    let after = sys::resident_bytes().unwrap_or(before);
    Some(Sample {
        usage,
        released: Some(before.saturating_sub(after)),
    })
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn usage_follows_a_large_allocation_and_its_release() {
        let before = sys::usage().expect("glibc reports its usage");
        // Above glibc's mmap threshold, so it is mapped and unmapped on its own.
        let block = vec![7u8; 64 * MIB as usize];
        let during = sys::usage().expect("glibc reports its usage");
        assert!(
            during.in_use >= before.in_use + 60 * MIB,
            "{before:?} → {during:?}"
        );
        drop(std::hint::black_box(block));
        let after = sys::usage().expect("glibc reports its usage");
        assert!(
            after.in_use + 60 * MIB <= during.in_use,
            "{during:?} → {after:?}"
        );
    }

    #[test]
    fn a_sample_trims_freed_small_chunks_back_out_of_resident_memory() {
        // Small chunks come from an arena, not from mmap. With the last one still allocated
        // (it pins the top of the heap) freeing the others leaves them held and resident
        // until a trim drops their pages.
        let chunks: Vec<Vec<u8>> = (0..40_000)
            .map(|i| vec![1 + (i % 200) as u8; 1024])
            .collect();
        let pin = vec![1u8; 1024];
        drop(std::hint::black_box(chunks));
        let held = sys::usage().expect("glibc reports its usage");
        assert!(held.free >= 30 * MIB, "{held:?}");

        let untouched = sample(false).expect("a sample");
        assert_eq!(untouched.released, None);
        let trimmed = sample(true).expect("a sample");
        let released = trimmed.released.expect("more than the threshold is free");
        assert!(released >= 30 * MIB, "released only {released} bytes");
        drop(std::hint::black_box(pin));
    }
}
