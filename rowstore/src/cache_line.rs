//! Cache-line prefetch hints for reads whose next addresses are known a little before
//! they are needed (a tree's child, an entry found by binary search, a scan's next
//! leaf): several misses to memory then overlap instead of following one another.

/// Ask the CPU to start loading the cache lines of `items`, so that several misses
/// overlap instead of following one another (a point read's leaf: its header and entry
/// table, then the entry and its value). A hint only: nothing is read, and on targets
/// other than x86-64 it does nothing.
#[inline]
pub fn prefetch<T>(items: &[T]) {
    prefetch_into::<{ hint::NEAR }, T>(items);
}

/// [`prefetch`] into the second-level cache only: for lines wanted a while from now
/// (the next block or leaf of a scan), which then do not hold up the first-level
/// cache's miss slots that the lines read next need.
#[inline]
pub fn prefetch_far<T>(items: &[T]) {
    prefetch_into::<{ hint::FAR }, T>(items);
}

/// The `_mm_prefetch` hints [`prefetch`] and [`prefetch_far`] use.
#[cfg(target_arch = "x86_64")]
mod hint {
    pub const NEAR: i32 = core::arch::x86_64::_MM_HINT_T0;
    pub const FAR: i32 = core::arch::x86_64::_MM_HINT_T1;
}

#[cfg(not(target_arch = "x86_64"))]
mod hint {
    pub const NEAR: i32 = 0;
    pub const FAR: i32 = 0;
}

#[inline(always)]
fn prefetch_into<const HINT: i32, T>(items: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::_mm_prefetch;
        let Some(last) = std::mem::size_of_val(items).checked_sub(1) else {
            return;
        };
        let start = items.as_ptr().cast::<u8>();
        let first_line = start as usize & !63;
        let end_line = (start as usize + last) & !63;
        for line in (first_line..=end_line).step_by(64) {
            // SAFETY: a prefetch never faults and reads nothing; the address is that of
            // a cache line holding a byte of `items`.
            unsafe {
                _mm_prefetch::<HINT>(
                    start
                        .wrapping_add(line.saturating_sub(start as usize))
                        .cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = items;
}

/// Ask the CPU to start loading `len` bytes from `p` for writing (an atomic
/// reference count about to be updated arrives owned, not shared first). A hint only:
/// `p` may dangle; nothing is read or written through it.
#[inline]
pub fn prefetch_for_write(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    prefetch_raw::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// [`prefetch`] of `len` bytes from `p`, which may dangle (an object reached through a
/// weak handle that may be gone by now): a hint only, nothing is read through it.
#[inline]
pub fn prefetch_ptr(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    prefetch_raw::<{ hint::NEAR }>(p, len);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_raw<const HINT: i32>(p: *const u8, len: usize) {
    use core::arch::x86_64::_mm_prefetch;
    let head = p as usize & 63;
    for i in 0..(head + len.max(1)).div_ceil(64) {
        // SAFETY: a prefetch never faults and accesses nothing; the address is only a
        // hint.
        unsafe { _mm_prefetch::<HINT>(p.wrapping_add((i * 64).wrapping_sub(head)).cast()) };
    }
}
