//! Spreading independent pieces of work over the threads of a rayon pool.
//!
//! Work-stealing hands work to a sleeping thread only once it is awake; on
//! a virtual machine waking an idle virtual CPU can take milliseconds, and
//! the scheduler may first queue the woken thread behind the busy one. A
//! job of a few milliseconds (a 32 MiB tensor quantized to Q4_0) then runs
//! mostly on one thread. Here the calling thread works, and one task per
//! other thread of the pool is queued at once (so every sleeping thread is
//! woken together); each takes the next piece from a shared counter until
//! none is left: a thread that starts late simply takes fewer pieces, and a
//! thread that is busy elsewhere takes none (its task finds the counter
//! exhausted).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

thread_local! {
    /// Set by [`on_this_thread`] for the duration of its closure.
    static ON_THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every [`for_each_item`] inside it working on the calling
/// thread, in order, instead of on the rayon pool: for callers that already
/// give each thread its own tensor, and to run a kernel on this very thread
/// (a pool's thread working while the caller waits can be slower on a
/// virtual machine, whose idle virtual CPU interferes).
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the previous setting, also when `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_THIS_THREAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ON_THIS_THREAD.with(|c| c.replace(true)));
    f()
}

/// Run `work` once on each item, on the threads of the current rayon pool
/// (the global pool outside any pool). Items are taken in order from a
/// shared counter; which thread runs which item does not change any result.
/// With one item, a pool of one thread, or inside [`on_this_thread`],
/// everything runs on the caller.
pub fn for_each_item<T: Send>(items: Vec<T>, work: impl Fn(T) + Sync) {
    if items.len() <= 1 || rayon::current_num_threads() <= 1 || ON_THIS_THREAD.with(|c| c.get()) {
        items.into_iter().for_each(work);
        return;
    }
    let tasks = rayon::current_num_threads().min(items.len());
    // Each slot is taken exactly once (the counter hands out each index to
    // one task), so the locks are never contended; they only make the
    // hand-over of `T` safe.
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let drain = || {
        while let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) {
            let item = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(item) = item {
                work(item);
            }
        }
    };
    // `in_place_scope` queues the tasks from the calling thread, all at
    // once (`scope` would first move to one worker, which would then wake
    // the others one by one), and the calling thread drains too instead of
    // sleeping until the others are done: one task fewer is queued, and no
    // thread has to be woken at the end to carry on.
    rayon::in_place_scope(|s| {
        for _ in 1..tasks {
            s.spawn(|_| drain());
        }
        drain();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_item_once_on_any_pool() {
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for n in [0, 1, 2, 7, 1000] {
                let mut out = vec![0u32; n];
                let items: Vec<(usize, &mut u32)> = out.iter_mut().enumerate().collect();
                pool.install(|| for_each_item(items, |(i, o)| *o += i as u32 + 1));
                assert!(out.iter().enumerate().all(|(i, &o)| o == i as u32 + 1));
            }
        }
    }

    #[test]
    fn nested_calls_complete() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut out = vec![vec![0u8; 50]; 10];
        pool.install(|| {
            for_each_item(out.iter_mut().collect(), |row| {
                for_each_item(row.iter_mut().collect(), |v| *v = 1)
            })
        });
        assert!(out.iter().flatten().all(|&v| v == 1));
    }

    #[test]
    fn a_busy_thread_of_the_pool_does_not_hold_the_work_up() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // One worker blocks until released; the work must still finish.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = wait.recv();
        });
        let (done, finished) = std::sync::mpsc::channel();
        let runner = std::thread::spawn(move || {
            let mut out = [0u8; 64];
            pool.install(|| for_each_item(out.iter_mut().collect(), |v| *v = 1));
            done.send(out.iter().all(|&v| v == 1)).unwrap();
            pool
        });
        let ok = finished.recv_timeout(std::time::Duration::from_secs(20));
        release.send(()).unwrap();
        drop(runner.join());
        assert_eq!(ok, Ok(true), "the work waited for the busy thread");
    }

    /// Whether `for_each_item` ran 50 slow items all on the calling thread.
    fn all_items_here() -> bool {
        let me = std::thread::current().id();
        let ids = Mutex::new(Vec::new());
        for_each_item((0..50).collect(), |_: usize| {
            // Slow enough that a second thread, if asked, takes some.
            std::thread::sleep(std::time::Duration::from_micros(200));
            ids.lock().unwrap().push(std::thread::current().id());
        });
        ids.into_inner().unwrap().iter().all(|&t| t == me)
    }

    #[test]
    fn on_this_thread_keeps_the_work_here() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert!(pool.install(|| on_this_thread(all_items_here)));
        assert!(on_this_thread(all_items_here));
        // Restored afterwards, also after a panic inside.
        let _ = std::panic::catch_unwind(|| on_this_thread(|| panic!("inside")));
        assert!(!ON_THIS_THREAD.with(|c| c.get()));
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            for_each_item((0..100).collect(), |i: i32| assert!(i != 57, "item 57"))
        });
        assert!(r.is_err());
    }
}
