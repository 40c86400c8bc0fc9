//! ganpo patch (vendor/README.md): the worker threads of the CPU backend's parallel loops.
//!
//! A training step on this backend is thousands of operations of 0.1 to 1 ms each. Waking a
//! parked thread for each one costs about as much as it saves (a futex wake, and in a virtual
//! machine the wake-up of an idle virtual CPU), which is why rayon and matrixmultiply's own
//! threads gain little there. These workers instead wait for the next part by spinning (with
//! `yield_now`, so other runnable threads keep their core) for a couple of milliseconds after
//! their last part, and only then park.
//!
//! A loaded machine (another process on a core) must not make a loop wait for a descheduled
//! worker: parts are claimed, not assigned. The caller and every worker take the next unclaimed
//! part until none is left, so a worker that arrives late finds its part already done by the
//! caller, and the caller only ever waits for parts a worker has started. When workers keep
//! arriving late, they stop spinning (a spinning worker would take core time from the caller
//! and the other process) and park as soon as they are idle, until they are on time again.
//!
//! The thread count is `MATMUL_NUM_THREADS` (the variable matrixmultiply read for its GEMM
//! threads, which this pool now runs) or else the CPUs this process may use
//! (`available_parallelism`: the affinity mask and the cgroup CPU quota); 1 keeps all work on
//! the calling thread.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker keeps spinning for the next part before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// A loop in which a worker that was handed a part had done none of them after this long (the
/// calling thread had done its own and then the worker's) counts as a late arrival: a spinning
/// worker picks up a part within microseconds, a parked one within about 0.1 ms.
const LATE: Duration = Duration::from_micros(300);

/// Lateness score at which workers stop spinning; see [`Pool::lateness`].
const STOP_SPINNING: u32 = 8;

/// A parallel loop in progress: its parts are claimed by index until none is left.
struct Loop {
    /// The next unclaimed part.
    next: AtomicUsize,
    /// Parts finished (run, or panicked).
    finished: AtomicUsize,
    parts: usize,
    /// Runs part `i`. The caller's closure with its lifetime erased: it is called only for a
    /// claimed index below `parts`, and the caller does not return before every such part has
    /// finished, so it is alive whenever it is called.
    call: *const (dyn Fn(usize) + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `call` points to a `Sync` closure that outlives every call through it (see `Loop`).
unsafe impl Send for Loop {}
unsafe impl Sync for Loop {}

impl Loop {
    /// A loop of `parts` parts run by `call`.
    ///
    /// # Safety
    /// The caller keeps `call` alive until every part claimed through it has finished.
    unsafe fn new(parts: usize, call: &(dyn Fn(usize) + Sync)) -> Arc<Loop> {
        Arc::new(Loop {
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            parts,
            // SAFETY: the caller's obligation above.
            call: unsafe { erase(call) },
            panic: Mutex::new(None),
        })
    }

    /// Claims and runs parts until none is left; returns how many this thread ran.
    fn help(&self) -> usize {
        let mut ran = 0;
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.parts {
                return ran;
            }
            // SAFETY: `i < parts` was claimed here alone, and the caller waits for it.
            let call = unsafe { &*self.call };
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(i))) {
                *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(panic);
            }
            self.finished.fetch_add(1, Ordering::AcqRel);
            ran += 1;
        }
    }
}

/// A worker's mailbox: the loop it is asked to help with (an `Arc<Loop>` as a raw pointer).
struct Slot {
    job: AtomicPtr<Loop>,
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
    /// Rises by 2 with each loop in which a worker arrived late, falls by 1 with each loop in
    /// which every worker handed a part did one; workers spin only below [`STOP_SPINNING`].
    lateness: AtomicU32,
    stats: Counters,
}

/// Running totals behind [`loop_stats`].
#[derive(Default)]
struct Counters {
    loops: AtomicUsize,
    parts: AtomicUsize,
    by_workers: AtomicUsize,
    late: AtomicUsize,
}

/// What the parallel loops have done so far in this process (ganpo patch, read by
/// `vendor/tests`; loops run entirely on one thread are not counted).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct LoopStats {
    /// Threads a loop may use, the calling one included.
    pub threads: usize,
    /// Loops handed to the workers.
    pub loops: usize,
    /// Parts of those loops.
    pub parts: usize,
    /// Parts run by a worker rather than the calling thread.
    pub parts_by_workers: usize,
    /// Loops in which a worker handed a part arrived after the caller had run it.
    pub late_loops: usize,
    /// Whether idle workers spin now (false while workers arrive late).
    pub workers_spin: bool,
}

/// The counters of the parallel loops (see [`LoopStats`]).
#[doc(hidden)]
pub fn loop_stats() -> LoopStats {
    let pool = pool();
    let read = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    LoopStats {
        threads: threads(),
        loops: read(&pool.stats.loops),
        parts: read(&pool.stats.parts),
        parts_by_workers: read(&pool.stats.by_workers),
        late_loops: read(&pool.stats.late),
        workers_spin: !late_workers(),
    }
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
            lateness: AtomicU32::new(0),
            stats: Counters::default(),
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

/// A worker's loop: help with each loop that arrives; while idle, spin for [`SPIN`] (unless
/// workers have been arriving late), then park.
fn work(slot: &Slot) {
    IN_POOL.with(|p| p.set(true));
    let mut idle_since = Instant::now();
    loop {
        let job = slot.job.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !job.is_null() {
            // SAFETY: the pointer came from `Arc::into_raw` in `run`, and taking it out of the
            // mailbox makes this thread its owner.
            let job = unsafe { Arc::from_raw(job) };
            job.help();
            drop(job);
            idle_since = Instant::now();
        } else if idle_since.elapsed() < SPIN && !late_workers() {
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

/// Runs `f` while every worker is kept busy elsewhere, as a worker descheduled by another
/// process would be (ganpo patch, for `vendor/tests`): the loops `f` starts are still handed to
/// the workers, which cannot take them.
#[doc(hidden)]
pub fn with_workers_held<R>(f: impl FnOnce() -> R) -> R {
    let pool = pool();
    let release = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    let hold = |_: usize| {
        started.fetch_add(1, Ordering::AcqRel);
        while !release.load(Ordering::Acquire) {
            thread::yield_now();
        }
    };
    let hold: &(dyn Fn(usize) + Sync) = &hold;
    // The mailboxes are empty while no loop runs.
    while pool.busy.swap(true, Ordering::Acquire) {
        thread::yield_now();
    }
    let jobs: Vec<Arc<Loop>> = pool
        .workers
        .iter()
        .map(|worker| {
            // SAFETY: `Release` below waits for every part.
            let job = unsafe { Loop::new(1, hold) };
            let previous = worker
                .slot
                .job
                .swap(Arc::into_raw(job.clone()).cast_mut(), Ordering::SeqCst);
            debug_assert!(previous.is_null(), "no loop runs while workers are held");
            worker.thread.unpark();
            job
        })
        .collect();
    /// Lets the workers go and waits for them, also when `f` panics.
    struct Release<'a>(&'a AtomicBool, &'a [Arc<Loop>]);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            for job in self.1 {
                while job.finished.load(Ordering::Acquire) < job.parts {
                    thread::yield_now();
                }
            }
        }
    }
    let _release = Release(&release, &jobs);
    while started.load(Ordering::Acquire) < jobs.len() {
        thread::yield_now();
    }
    pool.busy.store(false, Ordering::Release);
    f()
}

/// A loop's closure with its lifetime erased (see [`Loop::call`]).
///
/// # Safety
/// The caller keeps `call` alive until every part claimed through it has finished.
unsafe fn erase<'a>(call: &'a (dyn Fn(usize) + Sync + 'a)) -> *const (dyn Fn(usize) + Sync) {
    // SAFETY: the same fat pointer with a longer lifetime; the caller's obligation above.
    unsafe {
        core::mem::transmute::<*const (dyn Fn(usize) + Sync + 'a), *const (dyn Fn(usize) + Sync)>(
            call,
        )
    }
}

/// Whether workers have lately been arriving after the caller had done their parts.
fn late_workers() -> bool {
    pool().lateness.load(Ordering::Relaxed) >= STOP_SPINNING
}

/// Threads a parallel loop may use, the calling one included.
pub(crate) fn threads() -> usize {
    pool().workers.len() + 1
}

/// Runs `kernel` on every part, on the calling thread and the workers, and returns when all
/// are done. Each part is run once, by whichever thread claims it first (all of them on the
/// calling thread when the workers are taken by another caller). A panic in a part is raised
/// again here once every part has finished.
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
    let count = parts.len();
    let parts: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let call = |i: usize| {
        if let Some(p) = parts[i].lock().unwrap_or_else(|e| e.into_inner()).take() {
            kernel(p)
        }
    };
    let call: &(dyn Fn(usize) + Sync) = &call;
    // SAFETY: `run` waits below for every claimed part to finish.
    let job = unsafe { Loop::new(count, call) };
    let helpers = &pool.workers[..pool.workers.len().min(count - 1)];
    let start = Instant::now();
    for worker in helpers {
        let previous = worker
            .slot
            .job
            .swap(Arc::into_raw(job.clone()).cast_mut(), Ordering::SeqCst);
        debug_assert!(previous.is_null(), "every loop takes its job back");
        if worker.slot.parked.load(Ordering::SeqCst) {
            worker.thread.unpark();
        }
    }
    let mine = job.help();
    // Jobs still in a mailbox were not picked up: take them back, nobody will run them now.
    for worker in helpers {
        let job = worker.slot.job.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !job.is_null() {
            // SAFETY: put there by `Arc::into_raw` above and not taken by the worker.
            drop(unsafe { Arc::from_raw(job) });
        }
    }
    // Wait for the parts that workers have started.
    let mut spins = 0u32;
    while job.finished.load(Ordering::Acquire) < count {
        if spins < 1_000 {
            core::hint::spin_loop();
            spins += 1;
        } else {
            thread::yield_now();
        }
    }
    // Lateness: a worker handed a part did none in a loop that lasted long enough for it to
    // have started one. Loops too short to tell leave the score as it is.
    let on_time = count - mine >= helpers.len();
    let stats = &pool.stats;
    stats.loops.fetch_add(1, Ordering::Relaxed);
    stats.parts.fetch_add(count, Ordering::Relaxed);
    stats.by_workers.fetch_add(count - mine, Ordering::Relaxed);
    if on_time || start.elapsed() >= LATE {
        if !on_time {
            stats.late.fetch_add(1, Ordering::Relaxed);
        }
        let _ = pool
            .lateness
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(if on_time {
                    s.saturating_sub(1)
                } else {
                    (s + 2).min(2 * STOP_SPINNING)
                })
            });
    }
    pool.busy.store(false, Ordering::Release);
    if let Some(panic) = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
        resume_unwind(panic);
    }
}
