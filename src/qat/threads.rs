//! Where a session's parallel work runs: a handle on a rayon pool (the
//! session's own, or rayon's global one), passed to the protocol's
//! functions as plain data.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::quant;

/// The most worker threads a session may ask for (rayon itself would start
/// up to 65535).
pub const MAX_THREADS: usize = 1024;

/// The threads parallel work runs on: a pool of its own, or none for
/// rayon's global pool (sized by `RAYON_NUM_THREADS` or the CPU count).
#[derive(Clone, Debug)]
pub struct Threads {
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Default for Threads {
    /// Rayon's global pool (see [`Threads::new`]).
    fn default() -> Threads {
        Threads::new(None)
    }
}

impl Threads {
    /// `pool`, or none for rayon's global pool — unless this process is a
    /// fork of the one that started the global pool, whose threads did not
    /// survive the fork (using it would wait for them forever): then a pool
    /// of this process's own.
    pub fn new(pool: Option<Arc<rayon::ThreadPool>>) -> Threads {
        Threads {
            pool: pool.or_else(forked_child_pool),
        }
    }

    /// A pool of `n` worker threads (at most [`MAX_THREADS`]); `None` for
    /// `n == 0` (the global pool).
    pub fn pool(n: usize) -> Result<Option<Arc<rayon::ThreadPool>>> {
        if n > MAX_THREADS {
            return Err(Error::invalid(
                "n_threads",
                format!("{n} (must be at most {MAX_THREADS})"),
            ));
        }
        if n == 0 {
            return Ok(None);
        }
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::Ggml(format!("cannot start {n} threads: {e}")))?;
        Ok(Some(Arc::new(p)))
    }

    /// Runs `f` on these threads.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Runs `f`, whose parallel work goes through the piece drivers of
    /// [`crate::quant`] only (`for_each_piece`), on these threads: on a
    /// one-thread pool it runs on the calling thread (handing a call over
    /// to a pool's single thread and waking it costs tens of microseconds,
    /// more than a small tensor's whole quantization).
    pub fn run_pieces<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) if p.current_num_threads() == 1 => quant::on_this_thread(f),
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// How many threads these are.
    pub fn count(&self) -> usize {
        self.run(rayon::current_num_threads)
    }
}

/// The process that first used rayon's global pool through a session.
static GLOBAL_POOL_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// A pool for a forked child of the process whose global pool the
/// sessions used (`None` in that process itself), made once per process.
fn forked_child_pool() -> Option<Arc<rayon::ThreadPool>> {
    static CHILD: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    if *GLOBAL_POOL_PID.get_or_init(|| pid) == pid {
        return None;
    }
    let mut child = CHILD.lock().unwrap_or_else(|e| e.into_inner());
    match &*child {
        Some((p, pool)) if *p == pid => Some(pool.clone()),
        _ => {
            // A pool inherited from another process has no threads here:
            // forget it rather than drop it (dropping signals them).
            if let Some(old) = child.take() {
                std::mem::forget(old);
            }
            let pool = rayon::ThreadPoolBuilder::new().build().ok().map(Arc::new)?;
            *child = Some((pid, pool.clone()));
            Some(pool)
        }
    }
}
