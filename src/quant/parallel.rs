//! Spreading independent pieces of work over the threads of a rayon pool.
//!
//! Work-stealing hands work to a sleeping thread only once it is awake; on
//! a virtual machine waking an idle virtual CPU can take milliseconds, and
//! the scheduler may first queue the woken thread behind the busy one. A
//! job of a few milliseconds (a 32 MiB tensor quantized to Q4_0) then runs
//! mostly on one thread. Here every thread of the pool is started at once
//! and takes the next piece from a shared counter, so a thread that starts
//! late simply takes fewer pieces.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Run `work` once on each item, on all threads of the current rayon pool
/// (the global pool outside any pool). Items are taken in order from a
/// shared counter; which thread runs which item does not change any result.
/// With one item, or a pool of one thread, everything runs on the caller.
pub(crate) fn for_each_item<T: Send>(items: Vec<T>, work: impl Fn(T) + Sync) {
    if items.len() <= 1 || rayon::current_num_threads() <= 1 {
        items.into_iter().for_each(work);
        return;
    }
    // Each slot is taken exactly once (the counter hands out each index to
    // one thread), so the locks are never contended; they only make the
    // hand-over of `T` safe.
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    rayon::broadcast(|_| {
        while let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) {
            let item = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(item) = item {
                work(item);
            }
        }
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
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            for_each_item((0..100).collect(), |i: i32| assert!(i != 57, "item 57"))
        });
        assert!(r.is_err());
    }
}
