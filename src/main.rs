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
/// and the kernel zeroing each page again. `MIMALLOC_PURGE_DELAY` in the environment wins.
///
/// The buffers too large for mimalloc's segments still go back to the OS and fault in again
/// (about 5.7k page faults per sandwich step). `MIMALLOC_PURGE_DECOMMITS=0` keeps them too:
/// 400 faults per step and a step about 15% faster, but a peak 25-45 MiB higher, which in
/// round 5 (docs/performance.md) went over the memory target of issue 10; so it is left to the
/// user. Round 6 took the peak to 362-408 MiB standalone; two alternated runs with and without
/// the option then showed no clear difference in peak or speed, so the default stays until a
/// quiet measurement says otherwise.
fn keep_freed_memory() {
    // `mi_option_purge_delay` in the bundled mimalloc 3 header. Its documented default, 10 (ms),
    // is checked first, so a different numbering changes nothing.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reading and setting an option are plain calls into mimalloc, valid at any time.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == 10 {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
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
