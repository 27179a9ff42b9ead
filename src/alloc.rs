//! The process's allocator: mimalloc, asked through the entry point that answers fastest.
//!
//! The `mimalloc` crate hands every Rust allocation to `mi_malloc_aligned`, whatever its
//! alignment. mimalloc's aligned path takes its fast free list only for blocks of up to 1 KiB;
//! a larger block whose size class is not a power of two (a request's 13 KB proxy future)
//! goes through its generic path and then over-allocates, even with an alignment of 1. Every
//! block `mi_malloc` returns is already aligned to 16 bytes (to 8 for blocks of 8 bytes or
//! less), so this allocator asks `mi_malloc` whenever that alignment is enough, as the standard
//! library's own allocator does with the C `malloc`, and the aligned entry points otherwise.
//! The saving per request is in docs/performance.md.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least this size has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`: its size classes are whole double words up to 64 bytes and multiples of
/// 16 above).
const MALLOC_ALIGN: usize = 16;

/// Whether a block of `size` bytes from `mi_malloc` is aligned enough for `align`: blocks of
/// 8 bytes or less are 8-aligned, all others 16-aligned, so an alignment of at most 16 that is
/// not larger than the size always holds.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct Allocator;

// SAFETY: every pointer comes from mimalloc and goes back to it (`mi_free` frees blocks from
// either entry point); each block is at least `layout.size()` bytes and aligned to
// `layout.align()` (`plain` above, or mimalloc's aligned entry points).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a Rust value can ask for comes back aligned, through both
    /// entry points, and keeps its bytes when it grows or shrinks.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [
                1usize, 3, 8, 9, 15, 16, 17, 24, 48, 100, 1000, 1536, 4097, 70_000,
            ] {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: non-zero sizes; each block is freed once, with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xA5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "grown: size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xA5), "grown: size {size}");
                    let grown = Layout::from_size_align(size * 3, align).expect("a valid layout");
                    let r = a.realloc(q, grown, size.div_ceil(2));
                    assert_eq!(r as usize % align, 0, "shrunk: size {size} align {align}");
                    assert!((0..size.div_ceil(2)).all(|i| *r.add(i) == 0xA5));
                    a.dealloc(
                        r,
                        Layout::from_size_align(size.div_ceil(2), align).expect("valid"),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0), "zeroed: size {size}");
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
