//! ganpo patch (vendor/README.md): the worker threads of the CPU backend's parallel loops.
//!
//! A training step on this backend is thousands of operations of 0.1 to 1 ms each. Waking a
//! parked thread for each one costs about as much as it saves (a futex wake, and in a virtual
//! machine the wake-up of an idle virtual CPU), which is why rayon and matrixmultiply's own
//! threads gain little there. These workers instead wait for the next part by spinning (with
//! `yield_now`, so other runnable threads keep their core) for a couple of milliseconds after
//! their last part, and only then park.
//!
//! The thread count is `MATMUL_NUM_THREADS` (the variable matrixmultiply read for its GEMM
//! threads, which this pool now runs) or else every core; 1 keeps all work on the calling thread.

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker keeps spinning for the next part before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// One part handed to a worker: the closure to call, and where the worker says it is done.
struct Job<'a> {
    call: &'a (dyn Fn() + Sync),
    done: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// A worker's mailbox: at most one job at a time.
struct Slot {
    job: AtomicPtr<Job<'static>>,
    parked: AtomicBool,
}

struct Worker {
    slot: Arc<Slot>,
    thread: Thread,
}

struct Pool {
    workers: Vec<Worker>,
    /// Held by the thread whose parts the workers run; a second caller runs its parts itself.
    busy: AtomicBool,
}

thread_local! {
    /// True on the pool's own threads: a part that starts a parallel loop runs it itself.
    static IN_POOL: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let wanted = std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let workers = (1..wanted).filter_map(|i| spawn(i).ok()).collect();
        Pool {
            workers,
            busy: AtomicBool::new(false),
        }
    })
}

fn spawn(index: usize) -> std::io::Result<Worker> {
    let slot = Arc::new(Slot {
        job: AtomicPtr::new(core::ptr::null_mut()),
        parked: AtomicBool::new(false),
    });
    let mailbox = slot.clone();
    let handle = thread::Builder::new()
        .name(format!("burn-ndarray-{index}"))
        .spawn(move || work(&mailbox))?;
    Ok(Worker {
        slot,
        thread: handle.thread().clone(),
    })
}

/// A worker's loop: run each job that arrives, spin while idle for [`SPIN`], then park.
fn work(slot: &Slot) {
    IN_POOL.with(|p| p.set(true));
    let mut idle_since = Instant::now();
    loop {
        let job = slot.job.swap(core::ptr::null_mut(), Ordering::Acquire);
        if !job.is_null() {
            // SAFETY: the caller of `run` keeps the job alive until `done` is set, and does not
            // return before that.
            let job = unsafe { &*job };
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (job.call)())) {
                *job.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(panic);
            }
            job.done.store(true, Ordering::Release);
            idle_since = Instant::now();
        } else if idle_since.elapsed() < SPIN {
            for _ in 0..64 {
                core::hint::spin_loop();
            }
            thread::yield_now();
        } else {
            slot.parked.store(true, Ordering::SeqCst);
            if slot.job.load(Ordering::SeqCst).is_null() {
                thread::park();
            }
            slot.parked.store(false, Ordering::SeqCst);
            idle_since = Instant::now();
        }
    }
}

/// Threads a parallel loop may use, the calling one included.
pub(crate) fn threads() -> usize {
    pool().workers.len() + 1
}

/// Runs `kernel` on every part, the first on the calling thread and the others on the workers
/// (parts beyond the thread count, or all of them when the workers are taken by another
/// caller, run on the calling thread), and returns when all are done. A panic in a part is
/// raised again here once every part has finished.
pub(crate) fn run<T: Send>(parts: Vec<T>, kernel: impl Fn(T) + Sync) {
    let pool = pool();
    let nested = IN_POOL.with(|p| p.get());
    if parts.len() < 2
        || pool.workers.is_empty()
        || nested
        || pool.busy.swap(true, Ordering::Acquire)
    {
        parts.into_iter().for_each(kernel);
        return;
    }
    let mut parts = parts.into_iter();
    let first = parts.next().expect("at least two parts");
    let handed: Vec<Mutex<Option<T>>> = parts
        .by_ref()
        .take(pool.workers.len())
        .map(|p| Mutex::new(Some(p)))
        .collect();
    let calls: Vec<_> = handed
        .iter()
        .map(|part| {
            let kernel = &kernel;
            move || {
                if let Some(p) = part.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    kernel(p)
                }
            }
        })
        .collect();
    let jobs: Vec<Job<'_>> = calls
        .iter()
        .map(|call| Job {
            call,
            done: AtomicBool::new(false),
            panic: Mutex::new(None),
        })
        .collect();
    /// Waits for every job in its drop, so that no worker still reads this stack frame when it
    /// unwinds or returns.
    struct WaitAll<'a, 'b>(&'a [Job<'b>], &'a AtomicBool);
    impl Drop for WaitAll<'_, '_> {
        fn drop(&mut self) {
            for job in self.0 {
                while !job.done.load(Ordering::Acquire) {
                    core::hint::spin_loop();
                }
            }
            self.1.store(false, Ordering::Release);
        }
    }
    let wait = WaitAll(&jobs, &pool.busy);
    for (job, worker) in jobs.iter().zip(&pool.workers) {
        // SAFETY: the lifetime is erased for the mailbox only; `wait` keeps `jobs` borrowed
        // until every worker has set `done`.
        let ptr = job as *const Job<'_> as *mut Job<'static>;
        worker.slot.job.store(ptr, Ordering::SeqCst);
        if worker.slot.parked.load(Ordering::SeqCst) {
            worker.thread.unpark();
        }
    }
    kernel(first);
    parts.for_each(&kernel);
    drop(wait);
    for job in &jobs {
        if let Some(panic) = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(panic);
        }
    }
}
