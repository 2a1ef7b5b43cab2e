//! The module's allocator: free lists of power-of-two size classes in
//! front of the system allocator (wasi-libc's dlmalloc).
//!
//! Every request allocates and frees the same few small blocks: the header
//! map the host hands over, a key, a shared-data value, a log line. In
//! dlmalloc each malloc and each free costs a few hundred guest
//! instructions (bins, coalescing, headers); here a small block is a pop or
//! a push on its class's list, about twenty. Blocks of 16 bytes to 4 KiB
//! (alignment up to 16) are served from the lists; a class's list only
//! grows to the most blocks of that class live at once, and those come from
//! the system allocator the first time. Larger blocks, and stricter
//! alignments, go straight to the system allocator.
//!
//! Memory: a block is rounded up to its class (at most twice its size). A
//! freed small block stays on its class's list, up to [`KEEP_BYTES`] per
//! class; past that it goes back to dlmalloc, which can merge it and reuse
//! it for any size. So what the lists hold beyond the live blocks is at
//! most 9 × 256 KiB, whatever sizes hostile traffic makes the module
//! allocate in turn (a wasm module's memory never shrinks either way).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Classes 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
const MIN_SHIFT: u32 = 4;
/// The largest block served from the lists.
pub const MAX_SMALL: usize = 16 << (CLASSES - 1);
/// Every class block is aligned to this (and to its size, up to it).
const ALIGN: usize = 16;
/// Free bytes each class's list keeps; more go back to the backing
/// allocator.
pub const KEEP_BYTES: usize = 256 << 10;

/// The size-class front over `B` (the system allocator in a module).
pub struct SizeClasses<B: GlobalAlloc = System> {
    /// Per class, the first free block; each free block's first word points
    /// to the next.
    heads: UnsafeCell<[*mut u8; CLASSES]>,
    backing: B,
}

/// A block on a list: the next one, and how many blocks the list holds
/// from this one down (so pushing reads one word and popping none).
#[repr(C)]
struct Free {
    next: *mut u8,
    depth: usize,
}

// SAFETY: a wasm module without the threads proposal runs on one thread:
// the lists are never touched concurrently. Not `Sync` anywhere else.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<B: GlobalAlloc + Sync> Sync for SizeClasses<B> {}

impl SizeClasses<System> {
    pub const fn new() -> Self {
        Self::over(System)
    }
}

impl Default for SizeClasses<System> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: GlobalAlloc> SizeClasses<B> {
    pub const fn over(backing: B) -> Self {
        Self {
            heads: UnsafeCell::new([ptr::null_mut(); CLASSES]),
            backing,
        }
    }
}

/// The class serving `layout`, if it is small.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if size > MAX_SMALL || layout.align() > ALIGN {
        return None;
    }
    if size <= 1 << MIN_SHIFT {
        return Some(0);
    }
    // The smallest power of two at least `size`, as a shift past 16.
    let bits = usize::BITS - (size - 1).leading_zeros();
    Some((bits - MIN_SHIFT) as usize)
}

/// The layout every block of class `class` has in the backing allocator.
#[inline]
fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two no larger than MAX_SMALL, aligned to 16 (a
    // power of two); the size is a multiple of the alignment.
    unsafe { Layout::from_size_align_unchecked(16 << class, ALIGN) }
}

// SAFETY: small blocks are handed out once (popped off a list) until freed
// (pushed back); each is at least 16 bytes and 16-aligned, so it holds a
// `Free` (two words) and meets any alignment up to 16. A freed block's layout
// is the one it was allocated with (GlobalAlloc's contract), so it goes
// back to the class it came from.
unsafe impl<B: GlobalAlloc> GlobalAlloc for SizeClasses<B> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return self.backing.alloc(layout);
        };
        let heads = &mut *self.heads.get();
        match heads.get_mut(class) {
            Some(head) if !head.is_null() => {
                let block = *head;
                *head = (*block.cast::<Free>()).next;
                block
            }
            _ => self.backing.alloc(class_layout(class)),
        }
    }

    // One copy, called from every drop site, rather than inlined into each.
    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return self.backing.dealloc(block, layout);
        };
        let heads = &mut *self.heads.get();
        let Some(head) = heads.get_mut(class) else {
            return self.backing.dealloc(block, class_layout(class));
        };
        let depth = if head.is_null() {
            1
        } else {
            (*head.cast::<Free>()).depth + 1
        };
        if depth << (class + 4) > KEEP_BYTES {
            // The list is full: back to the backing allocator, in the
            // layout the block came from.
            return self.backing.dealloc(block, class_layout(class));
        }
        block.cast::<Free>().write(Free { next: *head, depth });
        *head = block;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new_layout)) {
            // Still fits its block.
            (Some(a), Some(b)) if a == b => block,
            (None, None) => self.backing.realloc(block, layout, new_size),
            _ => {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Counts what reaches the backing allocator.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        frees: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            System.dealloc(p, layout)
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_holds_them() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 1)), Some(1));
        assert_eq!(class_of(layout(32, 16)), Some(1));
        assert_eq!(class_of(layout(33, 4)), Some(2));
        assert_eq!(class_of(layout(4096, 1)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(4097, 1)), None);
        assert_eq!(class_of(layout(8, 32)), None);
        for size in 1..=MAX_SMALL {
            let c = class_of(layout(size, 1)).unwrap();
            assert!(16 << c >= size, "{size} in class {c}");
            assert!(
                c == 0 || 16 << (c - 1) < size,
                "{size}: a smaller class fits"
            );
        }
    }

    #[test]
    fn a_freed_small_block_is_reused_without_the_backing_allocator() {
        let a = SizeClasses::over(Counting::default());
        unsafe {
            let l = layout(300, 1);
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(0xab, 300);
            a.dealloc(p, l);
            // Another size of the same class (257..=512) gets the same block.
            let l2 = layout(400, 8);
            let q = a.alloc(l2);
            assert_eq!(q, p);
            assert_eq!(a.backing.allocs.get(), 1);
            assert_eq!(a.backing.frees.get(), 0);
            // A live block is never handed out twice.
            let r = a.alloc(l2);
            assert_ne!(r, q);
            assert_eq!(a.backing.allocs.get(), 2);
            a.dealloc(q, l2);
            a.dealloc(r, l2);
        }
    }

    #[test]
    fn blocks_are_aligned_and_hold_their_size() {
        let a = SizeClasses::over(Counting::default());
        let mut live = Vec::new();
        unsafe {
            for (i, align) in [1usize, 2, 4, 8, 16].iter().cycle().take(200).enumerate() {
                let l = layout(1 + i * 23 % MAX_SMALL, *align);
                let p = a.alloc(l);
                assert_eq!(p as usize % align, 0);
                p.write_bytes(i as u8, l.size());
                live.push((p, l, i as u8));
            }
            // Nothing overlapped: every block still holds its own bytes.
            for (p, l, v) in &live {
                assert!(std::slice::from_raw_parts(*p, l.size())
                    .iter()
                    .all(|b| b == v));
            }
            for (p, l, _) in live {
                a.dealloc(p, l);
            }
        }
    }

    #[test]
    fn large_and_overaligned_blocks_go_to_the_backing_allocator() {
        let a = SizeClasses::over(Counting::default());
        unsafe {
            for l in [layout(MAX_SMALL + 1, 1), layout(64, 64)] {
                let p = a.alloc(l);
                assert_eq!(p as usize % l.align(), 0);
                a.dealloc(p, l);
            }
            assert_eq!(a.backing.allocs.get(), 2);
            assert_eq!(a.backing.frees.get(), 2);
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_and_the_block_when_the_class_fits() {
        let a = SizeClasses::over(Counting::default());
        unsafe {
            let l = layout(20, 1);
            let p = a.alloc(l);
            p.copy_from_nonoverlapping(b"abcdefghijklmnopqrst".as_ptr(), 20);
            // 20 -> 30: same 32-byte class.
            let q = a.realloc(p, l, 30);
            assert_eq!(q, p);
            // 30 -> 5000: out to the backing allocator, bytes kept.
            let r = a.realloc(q, layout(30, 1), 5000);
            assert_eq!(std::slice::from_raw_parts(r, 20), b"abcdefghijklmnopqrst");
            // 5000 -> 6000: backing to backing.
            let s = a.realloc(r, layout(5000, 1), 6000);
            assert_eq!(std::slice::from_raw_parts(s, 20), b"abcdefghijklmnopqrst");
            // 6000 -> 10: back into a class.
            let t = a.realloc(s, layout(6000, 1), 10);
            assert_eq!(std::slice::from_raw_parts(t, 10), b"abcdefghij");
            a.dealloc(t, layout(10, 1));
            // The 32-byte block freed by the move is reused.
            assert_eq!(a.alloc(layout(32, 1)), p);
        }
    }

    #[test]
    fn each_list_keeps_at_most_its_share_and_returns_the_rest() {
        let a = SizeClasses::over(Counting::default());
        let l = layout(4096, 8);
        let keep = KEEP_BYTES / 4096;
        unsafe {
            let blocks: Vec<*mut u8> = (0..keep + 10).map(|_| a.alloc(l)).collect();
            assert_eq!(a.backing.allocs.get(), keep + 10);
            for p in blocks {
                a.dealloc(p, l);
            }
            // The list kept `keep` blocks; ten went back.
            assert_eq!(a.backing.frees.get(), 10);
            // Reused from the list, then fresh from the backing allocator.
            let again: Vec<*mut u8> = (0..keep + 1).map(|_| a.alloc(l)).collect();
            assert_eq!(a.backing.allocs.get(), keep + 11);
            for p in again {
                a.dealloc(p, l);
            }
            // A zeroed small block is zeroed even when recycled.
            let p = a.alloc(layout(64, 8));
            p.write_bytes(0xff, 64);
            a.dealloc(p, layout(64, 8));
            let z = a.alloc_zeroed(layout(64, 8));
            assert_eq!(z, p);
            assert!(std::slice::from_raw_parts(z, 64).iter().all(|b| *b == 0));
            a.dealloc(z, layout(64, 8));
        }
    }
}
