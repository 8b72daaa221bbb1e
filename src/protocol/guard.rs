//! The decode guard: no request frame may abort or panic the process while it is decoded.
//!
//! # The threat
//!
//! `kafka-protocol` decodes an array by reading its element count off the wire (an `i32` for
//! `Array`, an unsigned varint for `CompactArray`) and calling `Vec::with_capacity(count)`
//! before it reads a single element. A 14-byte Metadata v1 frame claiming `i32::MAX` topics asks
//! for 2^31 × 72 bytes = 144 GiB. The allocation fails (it exceeds RAM + swap, which the
//! kernel's default `vm.overcommit_memory = 0` heuristic refuses), and a failed allocation in
//! Rust is not an error but `handle_alloc_error`: the process aborts, taking every connection
//! with it. `catch_unwind` cannot help: an abort does not unwind. Reproduced before this guard
//! existed: `memory allocation of 154618822584 bytes failed`, exit status 134.
//!
//! # The mechanism
//!
//! 1. A global allocator ([`GuardAllocator`], installed for every binary that links gregor)
//!    serves every allocation of at least [`MAPPED_BYTES_MIN`] bytes (and alignment of at most
//!    4 KiB) from its own anonymous mapping, `mmap(MAP_PRIVATE | MAP_ANONYMOUS |
//!    MAP_NORESERVE)`, and everything smaller from [`System`]. A `MAP_NORESERVE` mapping only
//!    reserves address space: under overcommit modes 0 and 1 it is not charged against the
//!    commit limit, and a page costs memory only once it is touched. So the 144 GiB vector
//!    above is granted, the decoder writes the few elements the frame really holds, fails on
//!    the missing bytes with an ordinary error, and the vector is unmapped. Resident memory
//!    never exceeds what the frame's real elements occupy. (Byte fields decoded into a
//!    `Vec<u8>` use `vec![0; len]`, i.e. `alloc_zeroed`, and take the same route; a fresh
//!    mapping is already zero.) Hostile sizes below the threshold go to [`System`]: each is far
//!    below RAM, so the kernel grants it, and it is freed untouched.
//! 2. [`guarded`] runs the decode under `catch_unwind`, so a panic inside the decoder (a
//!    "capacity overflow", an indexing bug in a future `kafka-protocol`) becomes an error on
//!    that one frame instead of a dead connection task or worse.
//!
//! The route of a block is a pure function of its [`Layout`] (size and alignment), which the
//! `GlobalAlloc` contract hands back unchanged to `dealloc` and `realloc`. There is therefore no
//! registry, no lock and no thread-local state on the allocation path: a vector decoded on one
//! thread and freed on another, or grown later by a handler, always goes back to the allocator
//! that made it. Legitimately large blocks (a 300 MB response buffer, an honest array of a
//! million topics) take the same route and behave exactly as before: glibc also serves blocks
//! this large with a private anonymous `mmap` (and grows them with `mremap`), so the only
//! change is that a single huge request can no longer fail for want of commit charge. The
//! route is not limited to decoding on purpose: limiting it would need the thread-local
//! "decoding" flag on the `dealloc` path too, where it is no longer set.
//!
//! # Limits (what this does not cover)
//!
//! - `vm.overcommit_memory = 2` (strict accounting) ignores `MAP_NORESERVE`: a huge count is
//!   then still refused by the kernel and the process aborts. Run gregor under mode 0 or 1.
//! - Address space: a hostile decode holds one reservation per nesting level of arrays at a
//!   time, each at most 2^32 × the element size, released as soon as the decode fails. Measured
//!   on `kafka-protocol` 0.18: 767 GiB for the worst single count (a 191-byte element), 688 GiB
//!   for CreateTopics with all three nested counts at the maximum; call it 2 TiB per decode.
//!   The 128 TiB of x86-64 user address space thus covers about 60 threads decoding hostile
//!   frames at the same instant. Decoding runs on the runtime's worker threads, so that is the
//!   bound; past it `mmap` fails, `map_failures_total` counts it and the allocation aborts.
//! - Honest counts: a frame whose elements are all present still expands in memory, up to
//!   32 bytes per wire byte (measured: a 10 MiB DescribeGroups v5 frame of empty group ids,
//!   one byte each, decodes to 320 MiB of 32-byte `StrBytes`). Those pages are touched, so
//!   this is real memory, bounded only by the frame size (`socket.request.max.bytes`) and the
//!   number of frames decoded at once: a server-side budget, not something an allocator can
//!   refuse without aborting.
//! - `panic = "abort"` in a profile turns every caught panic back into an abort: keep unwinding.
//! - Non-Linux targets get the [`System`] allocator unchanged (no `MAP_NORESERVE`, no `mremap`).
//!
//! Every decode of an untrusted frame goes through [`guarded`] (or [`guarded_decode`]);
//! `codec::decode_request` is the one caller on the request path.

// The allocator has to call `mmap` and implement `GlobalAlloc`. The crate denies unsafe code
// everywhere but here and `frame.rs` (whose `BufMut` impl only delegates to `BytesMut`).
// Every unsafe block below carries its SAFETY argument.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

/// Blocks of at least this many bytes are served from their own `MAP_NORESERVE` mapping.
///
/// Low enough that any single allocation the kernel could refuse (one larger than RAM + swap)
/// takes this route on any machine gregor runs on; high enough (above glibc's largest
/// `mmap` threshold, 32 MiB) that it only meets blocks glibc would have mapped anyway.
pub const MAPPED_BYTES_MIN: usize = 64 << 20;

/// The largest alignment a fresh mapping is guaranteed to have (the smallest page size).
/// Blocks aligned more strictly stay with [`System`]; no decoder asks for one.
const MAPPED_ALIGN_MAX: usize = 4096;

#[global_allocator]
static ALLOCATOR: GuardAllocator = GuardAllocator;

/// Counters since process start, for metrics and tests. Reading them is a few atomic loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardStats {
    /// Blocks served from a `MAP_NORESERVE` mapping (at any time, decoding or not).
    pub mapped_blocks_total: u64,
    /// Of those, blocks requested while a [`guarded`] decode ran on the requesting thread: an
    /// implausible element count from a client, or an unusually large honest request.
    pub mapped_blocks_in_decode_total: u64,
    /// Bytes of address space mapped right now (requested sizes, not rounded to pages).
    pub mapped_bytes: u64,
    /// The most `mapped_bytes` has ever been.
    pub mapped_bytes_peak: u64,
    /// Mappings the kernel refused (the allocation then failed as it would have without us).
    pub map_failures_total: u64,
    /// Panics caught by [`guarded`] and returned as errors.
    pub panics_caught_total: u64,
}

static MAPPED_BLOCKS_TOTAL: AtomicU64 = AtomicU64::new(0);
static MAPPED_BLOCKS_IN_DECODE_TOTAL: AtomicU64 = AtomicU64::new(0);
static MAPPED_BYTES: AtomicU64 = AtomicU64::new(0);
static MAPPED_BYTES_PEAK: AtomicU64 = AtomicU64::new(0);
static MAP_FAILURES_TOTAL: AtomicU64 = AtomicU64::new(0);
static PANICS_CAUGHT_TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The length of the frame this thread is decoding under [`guarded`], if any. Const
    /// initialised and without a destructor, so the allocator may read it at any time
    /// (including thread teardown) without allocating.
    static DECODING_FRAME_LEN: Cell<Option<usize>> = const { Cell::new(None) };
    /// Bytes mapped by this thread while decoding; [`guarded`] reports the difference.
    static MAPPED_IN_DECODE_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Reads the guard's counters.
pub fn stats() -> GuardStats {
    GuardStats {
        mapped_blocks_total: MAPPED_BLOCKS_TOTAL.load(Ordering::Relaxed),
        mapped_blocks_in_decode_total: MAPPED_BLOCKS_IN_DECODE_TOTAL.load(Ordering::Relaxed),
        mapped_bytes: MAPPED_BYTES.load(Ordering::Relaxed),
        mapped_bytes_peak: MAPPED_BYTES_PEAK.load(Ordering::Relaxed),
        map_failures_total: MAP_FAILURES_TOTAL.load(Ordering::Relaxed),
        panics_caught_total: PANICS_CAUGHT_TOTAL.load(Ordering::Relaxed),
    }
}

/// A panic caught while decoding, as an error value.
#[derive(Debug, thiserror::Error)]
#[error("decoder panicked: {message}")]
pub struct DecodePanic {
    /// The panic message (`<non-string panic payload>` when it carried something else).
    pub message: String,
}

impl DecodePanic {
    fn from_payload(payload: &(dyn Any + Send)) -> Self {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "<non-string panic payload>".to_string()
        };
        DecodePanic { message }
    }
}

/// A result type [`guarded`] can turn a caught panic into: any `Result` whose error type
/// converts from [`DecodePanic`] (`anyhow::Error` does, as does a `thiserror` enum with a
/// `#[from] DecodePanic` variant).
pub trait FromDecodePanic {
    /// The value standing for a decode that panicked.
    fn from_decode_panic(panic: DecodePanic) -> Self;
}

impl<T, E: From<DecodePanic>> FromDecodePanic for Result<T, E> {
    fn from_decode_panic(panic: DecodePanic) -> Self {
        Err(E::from(panic))
    }
}

/// Runs `f` (a decode of an untrusted frame of `frame_len` bytes) under the decode guard.
///
/// Oversized allocations are made harmless by the global allocator (see the module doc);
/// here a panic in `f` is caught and returned as an `Err` built from [`DecodePanic`]. The
/// decoder's state (the half-consumed buffer) is dropped with the error, which is why
/// asserting unwind safety is sound: nothing `f` touched is observed after a panic. Nested
/// calls are allowed.
pub fn guarded<R: FromDecodePanic>(frame_len: usize, f: impl FnOnce() -> R) -> R {
    let scope = DecodeScope::enter(frame_len);
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    let mapped_bytes = scope.exit();
    if mapped_bytes > 0 {
        tracing::debug!(
            frame_len,
            mapped_bytes,
            "decode reserved address space beyond the frame (implausible element count?)"
        );
    }
    match outcome {
        Ok(value) => value,
        Err(payload) => {
            PANICS_CAUGHT_TOTAL.fetch_add(1, Ordering::Relaxed);
            R::from_decode_panic(DecodePanic::from_payload(payload.as_ref()))
        }
    }
}

/// [`guarded`] for the common case of a decoder returning `anyhow::Result`.
pub fn guarded_decode<T>(
    frame_len: usize,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    guarded(frame_len, f)
}

/// Marks this thread as decoding for as long as it lives, restoring the previous state on
/// drop (so also when unwinding).
struct DecodeScope {
    previous_frame_len: Option<usize>,
    mapped_bytes_at_entry: u64,
}

impl DecodeScope {
    fn enter(frame_len: usize) -> Self {
        DecodeScope {
            previous_frame_len: DECODING_FRAME_LEN.with(|cell| cell.replace(Some(frame_len))),
            mapped_bytes_at_entry: MAPPED_IN_DECODE_BYTES.with(Cell::get),
        }
    }

    /// Leaves the scope; returns the bytes this thread mapped while inside it.
    fn exit(self) -> u64 {
        MAPPED_IN_DECODE_BYTES
            .with(Cell::get)
            .wrapping_sub(self.mapped_bytes_at_entry)
    }
}

impl Drop for DecodeScope {
    fn drop(&mut self) {
        DECODING_FRAME_LEN.with(|cell| cell.set(self.previous_frame_len));
    }
}

/// The process's global allocator: [`System`], except that large blocks get their own
/// `MAP_NORESERVE` mapping (see the module doc). Stateless: the route of a block depends only
/// on its layout.
#[derive(Debug)]
pub struct GuardAllocator;

/// Whether a block of this layout lives in its own mapping. `dealloc` and `realloc` receive
/// the layout `alloc` was given, so they take the same decision.
#[inline]
fn is_mapped(layout: Layout) -> bool {
    cfg!(target_os = "linux")
        && layout.size() >= MAPPED_BYTES_MIN
        && layout.align() <= MAPPED_ALIGN_MAX
}

fn note_mapped(size: usize) {
    let size = size as u64;
    note_this_thread(1, size as i64);
    MAPPED_BLOCKS_TOTAL.fetch_add(1, Ordering::Relaxed);
    let now = MAPPED_BYTES.fetch_add(size, Ordering::Relaxed) + size;
    MAPPED_BYTES_PEAK.fetch_max(now, Ordering::Relaxed);
    // `try_with` rather than `with`: never panic inside the allocator, even during teardown.
    let decoding = DECODING_FRAME_LEN
        .try_with(|cell| cell.get().is_some())
        .unwrap_or(false);
    if decoding {
        MAPPED_BLOCKS_IN_DECODE_TOTAL.fetch_add(1, Ordering::Relaxed);
        let _ = MAPPED_IN_DECODE_BYTES.try_with(|cell| cell.set(cell.get().wrapping_add(size)));
    }
}

/// One mapped block resized in place or moved (not a new block).
fn note_remapped(old_size: usize, new_size: usize) {
    if new_size >= old_size {
        let grown = (new_size - old_size) as u64;
        note_this_thread(0, grown as i64);
        let now = MAPPED_BYTES.fetch_add(grown, Ordering::Relaxed) + grown;
        MAPPED_BYTES_PEAK.fetch_max(now, Ordering::Relaxed);
    } else {
        note_unmapped(old_size - new_size);
    }
}

fn note_unmapped(size: usize) {
    note_this_thread(0, -(size as i64));
    MAPPED_BYTES.fetch_sub(size as u64, Ordering::Relaxed);
}

#[cfg(test)]
thread_local! {
    /// Unit tests only: blocks mapped and net bytes mapped minus unmapped by this thread, so
    /// tests can check their own effects while other tests in the binary allocate in parallel.
    static THIS_THREAD: Cell<(u64, i64)> = const { Cell::new((0, 0)) };
}

#[cfg(test)]
fn note_this_thread(blocks: u64, bytes: i64) {
    let _ = THIS_THREAD.try_with(|cell| {
        let (total_blocks, net_bytes) = cell.get();
        cell.set((total_blocks + blocks, net_bytes + bytes));
    });
}

#[cfg(not(test))]
fn note_this_thread(_blocks: u64, _bytes: i64) {}

fn note_map_failure() {
    MAP_FAILURES_TOTAL.fetch_add(1, Ordering::Relaxed);
}

#[cfg(target_os = "linux")]
mod os {
    use std::ptr;

    /// Maps `size` fresh zeroed bytes of reserved-only address space; null on failure.
    ///
    /// # Safety
    /// `size` must be non-zero.
    pub(super) unsafe fn map(size: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory; the arguments are valid for any non-zero size.
        let address = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            address.cast()
        }
    }

    /// Unmaps a block returned by [`map`] or [`remap`].
    ///
    /// # Safety
    /// `address` and `size` must be those of a live mapped block, not used afterwards.
    pub(super) unsafe fn unmap(address: *mut u8, size: usize) {
        // SAFETY: per the contract the range is exactly one mapping we created. munmap can only
        // fail for an invalid range, which that rules out, so its result carries nothing.
        let _ = unsafe { libc::munmap(address.cast(), size) };
    }

    /// Resizes a mapped block, moving it if needed; null on failure (the old block is then
    /// untouched and still valid).
    ///
    /// # Safety
    /// `address` and `old_size` must be those of a live mapped block; `new_size` non-zero.
    pub(super) unsafe fn remap(address: *mut u8, old_size: usize, new_size: usize) -> *mut u8 {
        // SAFETY: the range is exactly one mapping we created; MREMAP_MAYMOVE lets the kernel
        // pick a new address, keeping the contents and the mapping's flags (MAP_NORESERVE).
        let moved =
            unsafe { libc::mremap(address.cast(), old_size, new_size, libc::MREMAP_MAYMOVE) };
        if moved == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            moved.cast()
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    //! Never called: `is_mapped` is false off Linux.

    pub(super) unsafe fn map(_size: usize) -> *mut u8 {
        std::ptr::null_mut()
    }

    pub(super) unsafe fn unmap(_address: *mut u8, _size: usize) {}

    pub(super) unsafe fn remap(_address: *mut u8, _old_size: usize, _new_size: usize) -> *mut u8 {
        std::ptr::null_mut()
    }
}

/// Maps a block for `layout` (which `is_mapped`), keeping the counters.
///
/// # Safety
/// `layout.size()` must be non-zero.
unsafe fn map_block(layout: Layout) -> *mut u8 {
    // SAFETY: is_mapped implies size >= MAPPED_BYTES_MIN > 0.
    let block = unsafe { os::map(layout.size()) };
    if block.is_null() {
        note_map_failure();
    } else {
        note_mapped(layout.size());
    }
    block
}

// SAFETY: every block is either System's (small or over-aligned layouts) or a fresh private
// mapping of at least `size` bytes at a page-aligned address (mmap returns page-aligned
// addresses and `is_mapped` admits alignments up to the smallest page size only). The route is
// a pure function of the layout, and the GlobalAlloc contract passes `dealloc` and `realloc` the
// layout the block was allocated with, so each block is freed or resized by the allocator that
// made it. Nothing here allocates, panics or unwinds.
unsafe impl GlobalAlloc for GuardAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            // SAFETY: GlobalAlloc callers guarantee a non-zero size.
            unsafe { map_block(layout) }
        } else {
            // SAFETY: forwarded unchanged under the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_mapped(layout) {
            // Fresh anonymous mappings are zero-filled by the kernel.
            // SAFETY: GlobalAlloc callers guarantee a non-zero size.
            unsafe { map_block(layout) }
        } else {
            // SAFETY: forwarded unchanged under the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_mapped(layout) {
            // SAFETY: a block of this layout was mapped by `alloc` (same route decision).
            unsafe { os::unmap(ptr, layout.size()) };
            note_unmapped(layout.size());
        } else {
            // SAFETY: a block of this layout came from System.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_size = layout.size();
        // SAFETY (for the unchecked constructor): the caller guarantees new_size, rounded up to
        // layout.align(), does not overflow isize, which is what Layout requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_mapped(layout), is_mapped(new_layout)) {
            // SAFETY: forwarded unchanged; the block is System's and stays System's.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: the block is a live mapping of old_size bytes; new_size is non-zero.
                let moved = unsafe { os::remap(ptr, old_size, new_size) };
                if moved.is_null() {
                    note_map_failure();
                } else {
                    note_remapped(old_size, new_size);
                }
                moved
            }
            (was_mapped, _) => {
                // Crossing between System and a mapping: allocate on the new route, copy, free.
                // SAFETY: new_layout has a non-zero size (the caller guarantees new_size > 0).
                let fresh = unsafe { self.alloc(new_layout) };
                if !fresh.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least min(old, new) long.
                    unsafe { std::ptr::copy_nonoverlapping(ptr, fresh, old_size.min(new_size)) };
                    if was_mapped {
                        // SAFETY: the old block is a live mapping of this layout.
                        unsafe { os::unmap(ptr, old_size) };
                        note_unmapped(old_size);
                    } else {
                        // SAFETY: the old block is System's, of this layout.
                        unsafe { System.dealloc(ptr, layout) };
                    }
                }
                fresh
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks this thread has mapped, and bytes it has mapped minus unmapped.
    fn this_thread() -> (u64, i64) {
        THIS_THREAD.with(Cell::get)
    }

    #[test]
    fn huge_capacity_inside_guard_is_reserved_not_committed() {
        let (blocks_before, bytes_before) = this_thread();
        let in_decode_before = MAPPED_IN_DECODE_BYTES.with(Cell::get);
        let result: anyhow::Result<usize> = guarded(16, || {
            // What the decoder does with a count of u32::MAX: 4 Gi × 96 bytes = 384 GiB.
            let mut huge: Vec<[u64; 12]> = Vec::with_capacity(u32::MAX as usize);
            huge.push([7; 12]);
            anyhow::ensure!(huge.capacity() >= u32::MAX as usize, "short capacity");
            Ok(huge.len())
        });
        assert_eq!(result.unwrap(), 1);
        let expected_bytes = u64::from(u32::MAX) * 96;
        assert_eq!(this_thread(), (blocks_before + 1, bytes_before));
        assert_eq!(
            MAPPED_IN_DECODE_BYTES.with(Cell::get) - in_decode_before,
            expected_bytes
        );
        assert!(stats().mapped_bytes_peak >= expected_bytes);
    }

    #[test]
    fn mapped_blocks_are_zeroed_and_survive_every_realloc_route() {
        let (blocks_before, bytes_before) = this_thread();
        // System -> mapping (growth across the threshold), keeping the contents.
        let mut bytes: Vec<u8> = Vec::with_capacity(1024);
        bytes.extend_from_slice(b"gregor");
        bytes.reserve_exact(MAPPED_BYTES_MIN);
        assert_eq!(&bytes[..], b"gregor");
        assert_eq!(
            this_thread(),
            (blocks_before + 1, bytes_before + bytes.capacity() as i64)
        );
        // Mapping -> mapping (mremap), keeping the contents.
        bytes.reserve_exact(2 * MAPPED_BYTES_MIN);
        assert_eq!(&bytes[..], b"gregor");
        assert_eq!(
            this_thread(),
            (blocks_before + 1, bytes_before + bytes.capacity() as i64)
        );
        // Mapping -> System (shrink below the threshold).
        bytes.shrink_to_fit();
        assert_eq!(&bytes[..], b"gregor");
        assert_eq!(this_thread(), (blocks_before + 1, bytes_before));
        drop(bytes);

        // alloc_zeroed on the mapped route: a fresh mapping reads as zeros.
        let zeros = vec![0u64; MAPPED_BYTES_MIN / 8];
        assert!(zeros.iter().step_by(4096).all(|&word| word == 0));
        assert_eq!(zeros[zeros.len() - 1], 0);
        drop(zeros);
        assert_eq!(this_thread(), (blocks_before + 2, bytes_before));
    }

    #[test]
    fn over_aligned_large_blocks_stay_with_system() {
        #[repr(align(8192))]
        struct Page(#[allow(dead_code)] [u8; 8192]);
        let before = this_thread();
        let pages: Vec<Page> = Vec::with_capacity(MAPPED_BYTES_MIN / 8192);
        assert_eq!(pages.as_ptr() as usize % 8192, 0);
        drop(pages);
        assert_eq!(this_thread(), before);
    }

    #[test]
    fn freed_on_another_thread_goes_back_to_its_mapping() {
        let (_, bytes_before) = this_thread();
        let block: anyhow::Result<Vec<u8>> = guarded(8, || Ok(Vec::with_capacity(1 << 40)));
        let block = block.unwrap();
        assert_eq!(this_thread().1, bytes_before + (1 << 40));
        let freed_there = std::thread::spawn(move || {
            drop(block);
            this_thread()
        })
        .join()
        .unwrap();
        assert_eq!(freed_there, (0, -(1 << 40)));
    }

    #[test]
    fn panics_become_errors_and_the_scope_is_restored() {
        let before = stats().panics_caught_total;
        let result: anyhow::Result<()> = guarded(4, || panic!("boom at {}", 3));
        let error = result.unwrap_err();
        assert!(format!("{error:#}").contains("boom at 3"), "{error:#}");
        assert!(error.downcast_ref::<DecodePanic>().is_some());
        assert!(stats().panics_caught_total > before);
        assert_eq!(DECODING_FRAME_LEN.with(Cell::get), None);

        let nested = guarded_decode(10, || {
            let inner: anyhow::Result<()> = guarded(5, || std::panic::panic_any(42u8));
            assert_eq!(DECODING_FRAME_LEN.with(Cell::get), Some(10));
            inner
        });
        assert!(format!("{:#}", nested.unwrap_err()).contains("non-string"));
        assert_eq!(DECODING_FRAME_LEN.with(Cell::get), None);
    }

    #[test]
    fn values_pass_through_unchanged() {
        let ok: Result<u32, anyhow::Error> = guarded(0, || Ok(5));
        assert_eq!(ok.unwrap(), 5);
        let err = guarded_decode::<u32>(0, || Err(anyhow::anyhow!("short")));
        assert_eq!(err.unwrap_err().to_string(), "short");
    }
}
