//! Rayon's global pool for inference, each thread on its own CPU.
//!
//! A batch-1 forward is shared by every thread of the pool ([`super::team`]), so it runs at
//! the speed of two threads only while both have a CPU. On the 2-vCPU VM of the benchmarks,
//! the kernel often woke both pool threads onto one vCPU and left the other idle for the
//! whole call (`perf sched timehist`: up to 2.9 ms of scheduling delay, about once per burst
//! of calls), so the call ran at one thread's speed. Pinning thread `i` to the `i`-th CPU that
//! the process may use removes that (docs/performance.md, round 9).
//!
//! Pinning is only done when the pool has exactly one thread per such CPU: a smaller pool
//! (`RAYON_NUM_THREADS=1`, MPI ranks that share a machine) would pin every process to the
//! same first CPUs. `USNET_PIN_THREADS=0` turns it off.

/// The CPUs for the pool's threads, thread `i` on `cpus[i]`: `allowed` when `threads` is its
/// length and pinning is `enabled`, else none.
pub(crate) fn pin_plan(threads: usize, allowed: &[usize], enabled: bool) -> Option<Vec<usize>> {
    (enabled && threads >= 2 && threads == allowed.len()).then(|| allowed.to_vec())
}

/// The CPUs this process may run on (its affinity mask), in increasing order.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data; `sched_getaffinity` writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Pins the calling thread to `cpu`. Where the OS refuses, the thread stays where the
/// scheduler puts it, as without pinning.
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; `CPU_SET` stays within the set for `cpu < CPU_SETSIZE`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) {}

/// A pool builder of `threads` threads (default: `RAYON_NUM_THREADS`, else one per CPU this
/// process may use), and the CPUs it pins them to, if any (see the module's documentation).
pub(crate) fn pool_builder(threads: Option<usize>) -> (rayon::ThreadPoolBuilder, Option<Vec<usize>>) {
    let allowed = allowed_cpus();
    let threads = threads
        .or_else(|| std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0))
        .unwrap_or_else(|| allowed.len().max(1));
    let enabled = std::env::var("USNET_PIN_THREADS").map_or(true, |v| v != "0");
    let plan = pin_plan(threads, &allowed, enabled);
    let mut builder = rayon::ThreadPoolBuilder::new().num_threads(threads);
    if let Some(cpus) = plan.clone() {
        builder = builder.start_handler(move |i| pin_current_thread(cpus[i]));
    }
    (builder, plan)
}

/// Builds rayon's global pool for inference: `threads` threads (default:
/// `RAYON_NUM_THREADS`, else one per CPU this process may use), each pinned to its own CPU
/// when there is one per CPU. Returns the CPUs they are pinned to, if any (thread `i` on the
/// `i`-th); `pinned_threads_run_on_their_cpus` checks that the OS follows.
///
/// Call it once, before anything else uses rayon; a process that deploys a model at batch 1
/// on a few cores gains the most.
///
/// # Errors
///
/// When the global pool already exists (rayon builds it on first use).
///
/// # Examples
///
/// ```no_run
/// let pinned = usnet::infer::init_global_pool(None).expect("the pool was built already");
/// eprintln!("inference threads pinned to CPUs {pinned:?}");
/// ```
pub fn init_global_pool(threads: Option<usize>) -> Result<Option<Vec<usize>>, rayon::ThreadPoolBuildError> {
    let (builder, plan) = pool_builder(threads);
    builder.build_global()?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_one_thread_per_allowed_cpu() {
        assert_eq!(pin_plan(2, &[0, 1], true), Some(vec![0, 1]));
        assert_eq!(pin_plan(3, &[2, 5, 7], true), Some(vec![2, 5, 7]));
        // Fewer threads than CPUs (another process may pin to the same first CPUs), more
        // threads than CPUs, one thread, pinning turned off, an unknown mask.
        assert_eq!(pin_plan(1, &[0, 1], true), None);
        assert_eq!(pin_plan(3, &[0, 1], true), None);
        assert_eq!(pin_plan(1, &[0], true), None);
        assert_eq!(pin_plan(2, &[0, 1], false), None);
        assert_eq!(pin_plan(2, &[], true), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinned_threads_run_on_their_cpus() {
        let allowed = allowed_cpus();
        if allowed.len() < 2 {
            return; // nothing to pin on a machine of one CPU
        }
        let (builder, plan) = pool_builder(Some(allowed.len()));
        if std::env::var("USNET_PIN_THREADS").is_ok_and(|v| v == "0") {
            assert!(plan.is_none());
            return;
        }
        assert_eq!(plan.as_deref(), Some(&allowed[..]));
        let pool = builder.build().unwrap();
        // SAFETY: `sched_getcpu` has no preconditions.
        let on: Vec<(usize, i32)> = pool.broadcast(|ctx| (ctx.index(), unsafe { libc::sched_getcpu() }));
        for (i, cpu) in on {
            assert_eq!(cpu as usize, allowed[i], "thread {i}");
        }
    }
}
