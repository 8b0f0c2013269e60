//! Progress bars for long work.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps with a message, drawn on stderr (hidden when it is not a terminal
/// unless `USNET_PROGRESS=1`).
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    if std::env::var_os("USNET_PROGRESS").is_some() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar
}
