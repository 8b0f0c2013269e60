//! The `usnet` command line: a thin shell over the library.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// mimalloc, told to keep freed memory (see [`keep_freed_memory`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc never to hand freed memory back to the OS. A training step frees and
/// reallocates the same activation buffers (tens of MiB each) every iteration; with the
/// system allocator, or mimalloc's default 10 ms purge delay, every step paid 250k page faults
/// and the kernel zeroing each page again. With purging off, the buffers larger than
/// mimalloc's segments still went back (decommitted) and faulted in again: 3.5-6k page faults
/// per sandwich step, `clear_page` 8.5% of the step's profile. Resetting instead of
/// decommitting took that to about 500 and the step 10% faster (issue 10, round 5).
/// `MIMALLOC_PURGE_DELAY` and `MIMALLOC_PURGE_DECOMMITS` in the environment win.
fn keep_freed_memory() {
    // Option numbers in the bundled mimalloc's header (v2, as v3). Each option's documented
    // default is checked first, so a different numbering changes nothing.
    const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    for (option, env, default, value) in [(PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 10, -1), (PURGE_DECOMMITS, "MIMALLOC_PURGE_DECOMMITS", 1, 0)] {
        if std::env::var_os(env).is_some() {
            continue;
        }
        // SAFETY: reading and setting an option are plain calls into mimalloc, valid at any time.
        unsafe {
            if libmimalloc_sys::mi_option_get(option) == default {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

/// The context chain joined by ": ", leaving out a cause that the message before it already
/// ends with (an I/O error whose text includes its source would otherwise print it twice).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}

fn main() -> ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<cli::Interrupted>().is_some() => ExitCode::from(cli::INTERRUPTED_EXIT as u8),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}
