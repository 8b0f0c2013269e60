//! How the threads of one forward share its layers.
//!
//! A plan that spreads one batch over the threads runs as a *team*: every thread of the rayon
//! pool runs the whole plan ([`Team::run`], one `rayon::broadcast`), each layer's tasks are
//! claimed from counters of that layer (each member's share first, so that a member keeps to
//! the same rows of the image from layer to layer, then what is left of the others'), and a
//! thread that runs out of tasks spins until the layer's last task is done. It waits for
//! unfinished work, not for the other threads to arrive, so a thread that the OS has not
//! scheduled holds nobody up unless it holds a task.
//! With rayon's fork-join per layer instead, the idle thread slept between layers and each
//! layer paid a wake-up, which on a VM whose vCPUs had idled (a server between requests) cost
//! more than the second thread gained (docs/performance.md, round 3).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Where the tasks of a layer run.
#[derive(Clone, Copy)]
pub(crate) enum Par<'a> {
    /// All on the calling thread.
    Serial,
    /// Shared among the members of a team; every member makes the same calls in the same
    /// order.
    Team(&'a Member<'a>),
}

impl Par<'_> {
    /// Runs `task(t)` for every `t < tasks`, each once, then (in a team) waits until all of
    /// them have finished, so that what comes next reads finished outputs.
    pub(crate) fn for_each(self, tasks: usize, task: impl Fn(usize)) {
        match self {
            Par::Serial => (0..tasks).for_each(task),
            Par::Team(member) => member.for_each(tasks, task),
        }
    }

    /// Threads that share the work.
    pub(crate) fn threads(self) -> usize {
        match self {
            Par::Serial => 1,
            Par::Team(member) => member.team.size,
        }
    }

    /// This thread's place among them, `0..threads()`.
    pub(crate) fn member(self) -> usize {
        match self {
            Par::Serial => 0,
            Par::Team(member) => member.index,
        }
    }
}

/// The state that the members of one team share.
pub(crate) struct Team {
    size: usize,
    /// Per [`Par::for_each`] call (in call order) and member, the next unclaimed task of
    /// that member's share, counted from the share's start.
    claimed: Vec<AtomicUsize>,
    /// The tasks of each call that have finished.
    done: Vec<AtomicUsize>,
    /// Set when a member panics, so that the others stop waiting for it.
    poisoned: AtomicBool,
}

/// Spins while waiting before yielding the CPU (tens of microseconds): a waiting thread
/// takes the next layer's first task at once, yet hands its core over soon when another
/// thread needs it.
const SPINS: u32 = 1 << 10;

impl Team {
    /// Runs `body` on every thread of the current rayon pool as one team that makes at most
    /// `calls` [`Par::for_each`] calls; returns when every member has finished.
    ///
    /// # Panics
    ///
    /// When a member panics (the others then panic too, rather than wait for it), or makes
    /// more than `calls` calls.
    pub(crate) fn run(calls: usize, body: impl Fn(Par<'_>) + Sync) {
        let size = rayon::current_num_threads();
        let team = Team {
            size,
            claimed: (0..calls * size).map(|_| AtomicUsize::new(0)).collect(),
            done: (0..calls).map(|_| AtomicUsize::new(0)).collect(),
            poisoned: AtomicBool::new(false),
        };
        rayon::broadcast(|ctx| {
            let member = Member { team: &team, index: ctx.index(), call: Cell::new(0) };
            let guard = Poison(&team);
            body(Par::Team(&member));
            std::mem::forget(guard);
        });
    }

    /// Blocks until `done` reaches `tasks`.
    fn wait(&self, done: &AtomicUsize, tasks: usize) {
        let mut spins = 0;
        while done.load(Ordering::Acquire) < tasks {
            assert!(!self.poisoned.load(Ordering::Relaxed), "inference: another thread of the team panicked");
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Marks the team poisoned when the member that holds it unwinds.
struct Poison<'a>(&'a Team);

impl Drop for Poison<'_> {
    fn drop(&mut self) {
        self.0.poisoned.store(true, Ordering::Relaxed);
    }
}

/// One thread's view of its team.
pub(crate) struct Member<'a> {
    team: &'a Team,
    /// This member's place in the team, `0..size`.
    index: usize,
    /// How many [`Par::for_each`] calls this member has made.
    call: Cell<usize>,
}

impl Member<'_> {
    fn for_each(&self, tasks: usize, task: impl Fn(usize)) {
        let call = self.call.get();
        self.call.set(call + 1);
        let size = self.team.size;
        assert!(call < self.team.done.len(), "inference: a team made more parallel calls than it was sized for");
        let (claimed, done) = (&self.team.claimed[call * size..][..size], &self.team.done[call]);
        // Each member first takes the tasks of its own share, then those left in the others'.
        // The layers' tasks go by rows of the image, so a member computes much the same rows
        // layer after layer, reading what its own cache holds; a member that the OS has not
        // scheduled yet holds nobody up, since the others take its share.
        let share = tasks.div_ceil(size);
        for m in (0..size).map(|k| (self.index + k) % size) {
            let end = ((m + 1) * share).min(tasks);
            loop {
                let t = m * share + claimed[m].fetch_add(1, Ordering::Relaxed);
                if t >= end {
                    break;
                }
                task(t);
                done.fetch_add(1, Ordering::Release);
            }
        }
        self.team.wait(done, tasks);
    }
}

/// A buffer that the members of a team write in disjoint parts, and read once the call that
/// wrote it has finished.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a `Buf` is a pointer and a length; its users write disjoint parts within one call
// and read only what a finished call has published.
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    pub(crate) fn new(values: &mut [f32]) -> Self {
        Buf { ptr: values.as_mut_ptr(), len: values.len() }
    }

    pub(crate) fn len(self) -> usize {
        self.len
    }

    pub(crate) fn ptr(self) -> *mut f32 {
        self.ptr
    }

    /// `len` values from `offset`, to read.
    ///
    /// # Safety
    ///
    /// The buffer is alive, and nobody writes those values while the slice is used.
    pub(crate) unsafe fn get(self, offset: usize, len: usize) -> &'static [f32] {
        assert!(offset + len <= self.len, "inference: a read past a buffer");
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }

    /// `len` values from `offset`, to write.
    ///
    /// # Safety
    ///
    /// The buffer is alive, and nobody else reads or writes those values while the slice is
    /// used.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_mut(self, offset: usize, len: usize) -> &'static mut [f32] {
        assert!(offset + len <= self.len, "inference: a write past a buffer");
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}

/// Runs `body` serially (`threads` = 1) or as a team of a new pool of `threads`.
#[cfg(test)]
pub(crate) fn on_threads(threads: usize, body: impl Fn(Par<'_>) + Sync + Send) {
    if threads == 1 {
        body(Par::Serial);
    } else {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| Team::run(64, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each member starts on a share of its own, but one that the OS has not run yet leaves
    /// its share to the others.
    #[test]
    fn a_late_member_holds_nobody_up() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let (tasks, ran) = (30, AtomicUsize::new(0));
        pool.install(|| {
            Team::run(1, |par| {
                let Par::Team(member) = par else { unreachable!() };
                if member.index == 0 {
                    // Member 0 arrives late: the others have taken its share too.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    assert_eq!(ran.load(Ordering::Relaxed), tasks, "the others left member 0's share to it");
                }
                par.for_each(tasks, |_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            })
        });
        assert_eq!(ran.into_inner(), tasks);
    }

    /// Every task runs once, and every task of a call sees all that the call before it
    /// wrote, over many calls of a team of 3.
    #[test]
    fn a_team_runs_each_task_once_and_waits_between_calls() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let calls = 300;
        let tasks_of = |call: usize| 1 + call % 64;
        // Calls alternate between two halves: a call reads the other half, which the call
        // before it wrote.
        let mut values = vec![-1.0f32; 128];
        let buf = Buf::new(&mut values);
        let runs = AtomicUsize::new(0);
        pool.install(|| {
            Team::run(calls, |par| {
                assert_eq!(par.threads(), 3);
                for call in 0..calls {
                    par.for_each(tasks_of(call), |t| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        if call > 0 {
                            let before = unsafe { buf.get(64 * ((call - 1) % 2), tasks_of(call - 1)) };
                            assert!(before.iter().all(|&v| v == (call - 1) as f32), "call {call} began before call {} was done", call - 1);
                        }
                        // Some work before the write, so that a member that went on early
                        // would read the value unwritten.
                        (0..2000).for_each(|i| {
                            std::hint::black_box(i);
                        });
                        unsafe { buf.get_mut(64 * (call % 2) + t, 1)[0] = call as f32 };
                    });
                }
            })
        });
        assert_eq!(runs.into_inner(), (0..calls).map(tasks_of).sum::<usize>());
    }

    #[test]
    fn a_panic_in_one_member_ends_the_team() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                Team::run(2, |par| {
                    par.for_each(2, |t| assert_ne!(t, 1, "task 1 fails"));
                    par.for_each(1, |_| {});
                })
            })
        }));
        assert!(result.is_err());
    }
}
