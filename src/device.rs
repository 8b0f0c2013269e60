//! Choosing the device a run uses.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// The backends this build has, in order of preference.
pub fn available_backends() -> Vec<&'static str> {
    [
        ("cuda", cfg!(feature = "cuda")),
        ("wgpu", cfg!(feature = "wgpu")),
        ("tch", cfg!(feature = "tch")),
        ("flex", cfg!(feature = "flex")),
    ]
    .into_iter()
    .filter_map(|(name, built)| built.then_some(name))
    .collect()
}

/// The device of backend `name` (`flex`, `tch`, `wgpu` or `cuda`), or of the build's first
/// backend when `name` is `None` (the environment variable `USNET_BACKEND` can choose too).
///
/// # Errors
///
/// A backend this build was compiled without, naming the cargo feature that adds it.
pub fn device(name: Option<&str>) -> Result<Device> {
    let from_env = std::env::var("USNET_BACKEND").ok();
    let available = available_backends();
    let name = match name.or(from_env.as_deref()) {
        Some(n) => n,
        None => available.first().copied().ok_or_else(|| {
            Error::InvalidConfig("this build has no backend; build with --features flex".into())
        })?,
    };
    if !available.contains(&name) {
        return Err(Error::InvalidConfig(format!(
            "backend {name:?} is not in this build (available: {}); rebuild with `--features {name}`",
            available.join(", ")
        )));
    }
    Ok(match name {
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "tch")]
        // burn 0.22 deprecates burn-tch, but it is the libtorch backend this crate offers.
        #[allow(deprecated)]
        "tch" => Device::libtorch(),
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        other => {
            return Err(Error::InvalidConfig(format!(
                "unknown backend {other:?}; expected one of flex, tch, wgpu, cuda"
            )));
        }
    })
}
