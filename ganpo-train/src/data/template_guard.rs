//! A bound on the memory one chat-template rendering may take, in programs that install
//! [`TemplateGuard`] as their global allocator (the `ganpo` binary does).
//!
//! minijinja bounds loops (fuel), the output ([`super::ChatTemplate::MAX_OUTPUT`]) and string
//! repetition, but not concatenation: a template that doubles a string in a loop asks for 2^k
//! bytes, and the process aborts when the allocator refuses (SIGABRT, no message). No error can
//! be returned from inside an allocation, so while a template renders on a thread, an
//! allocation above [`MAX_ALLOCATION`] on that thread ends the process cleanly instead, with a
//! message naming the template and exit status 1. Templates render while the data is loaded,
//! before a run writes anything, so nothing is lost.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: ganpo_train::data::TemplateGuard = ganpo_train::data::TemplateGuard;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// The largest single allocation a rendering may make: four times the output bound, so a
/// template within [`super::ChatTemplate::MAX_OUTPUT`] never comes near it.
pub const MAX_ALLOCATION: usize = 256 << 20;

thread_local! {
    /// The name of the template rendering on this thread (pointer and length), or null.
    static RENDERING: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// Marks the current thread as rendering the template `name` until dropped.
pub(crate) struct Rendering {
    previous: (*const u8, usize),
}

/// Marks the current thread as rendering the template `name` (which must outlive the guard).
pub(crate) fn rendering(name: &str) -> Rendering {
    let previous = RENDERING.with(|r| r.replace((name.as_ptr(), name.len())));
    Rendering { previous }
}

impl Drop for Rendering {
    fn drop(&mut self) {
        RENDERING.with(|r| r.set(self.previous));
    }
}

/// The system allocator, with the bound above on chat-template renderings.
pub struct TemplateGuard;

impl TemplateGuard {
    /// Ends the process if a template is rendering on this thread and `size` is over the bound.
    #[inline]
    fn check(size: usize) {
        if size > MAX_ALLOCATION {
            let (name, len) = RENDERING
                .try_with(|r| r.replace((std::ptr::null(), 0)))
                .unwrap_or((std::ptr::null(), 0));
            if !name.is_null() {
                // SAFETY: set from a `&str` that outlives its `Rendering` guard.
                let name =
                    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(name, len)) };
                runaway(name, size);
            }
        }
    }
}

/// Reports a runaway template and exits (formatting integers and writing to the unbuffered
/// stderr allocate nothing).
#[cold]
fn runaway(name: &str, size: usize) -> ! {
    let _ = writeln!(
        std::io::stderr().lock(),
        "Error: the chat template {name} asked for {size} bytes while rendering one \
         conversation (the limit is {MAX_ALLOCATION}): a runaway template, such as one that \
         doubles a string in a loop; fix or replace that template"
    );
    std::process::exit(1)
}

// SAFETY: every call is forwarded to `System` unchanged; `check` only reads a thread-local.
unsafe impl GlobalAlloc for TemplateGuard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
