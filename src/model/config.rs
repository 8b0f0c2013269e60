//! Model configuration: architecture, block table and options.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::width::{make_divisible, Width, WidthRange};

/// The network family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// US-MobileNet v1: depthwise-separable blocks, rows `[c, n, s]`.
    UsMobilenetV1,
    /// US-MobileNet v2: inverted residual blocks, rows `[t, c, n, s]`.
    UsMobilenetV2,
}

impl Arch {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::UsMobilenetV1 => "us_mobilenet_v1",
            Arch::UsMobilenetV2 => "us_mobilenet_v2",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "us_mobilenet_v1" => Ok(Arch::UsMobilenetV1),
            "us_mobilenet_v2" => Ok(Arch::UsMobilenetV2),
            other => Err(Error::InvalidConfig(format!(
                "unknown arch {other:?}; expected us_mobilenet_v1 or us_mobilenet_v2"
            ))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of a block table: `n` blocks with expansion `t` (1 for v1), `c` output channels
/// at full width, stride `s` on the first block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRow {
    pub t: usize,
    pub c: usize,
    pub n: usize,
    pub s: usize,
}

/// The options of a US-MobileNet, with the names of the golden files' `model` section.
///
/// Defaults ([`ModelConfig::imagenet`]) reproduce the official ImageNet models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    pub num_classes: usize,
    pub input_channels: usize,
    /// The `make_divisible` divisor `d`.
    pub divisor: usize,
    /// `[min, max]` width. Optional in an experiment config's `[model]` table, where it
    /// defaults to the experiment's `width_mult_range` and, when given, must equal it.
    #[serde(default = "unset_range")]
    pub width_range: [f64; 2],
    /// Rows `[c, n, s]` (v1) or `[t, c, n, s]` (v2).
    pub block_setting: Vec<Vec<usize>>,
    pub stem_channels: usize,
    pub stem_stride: usize,
    /// v2's last 1x1 conv; must be absent for v1.
    #[serde(default)]
    pub last_channels: Option<usize>,
    /// S-Nets: switchable BN with private BN parameters for each of these widths; the
    /// model then runs only at them. Absent for US-Nets. Set from the experiment's
    /// `width_mult_list` when `mode = "slimmable"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchable_bn: Option<Vec<f64>>,
}

/// The largest size any model option may have (channels, classes, repeats, strides, divisor).
pub const MAX_DIM: usize = 1 << 24;

/// The most parameters a model may have: 100 million, 0.4 GB as f32 (the official ImageNet
/// US-MobileNets have 3.5 and 4.2 million).
pub const MAX_PARAMS: u64 = 100_000_000;

/// The marker of a `width_range` left out of a TOML `[model]` table.
fn unset_range() -> [f64; 2] {
    [f64::NAN; 2]
}

impl ModelConfig {
    /// Whether `width_range` was left out of the TOML it was read from.
    pub fn width_range_unset(&self) -> bool {
        self.width_range.iter().all(|v| v.is_nan())
    }

    /// The official ImageNet configuration of `arch` with `num_classes` outputs.
    pub fn imagenet(arch: Arch, num_classes: usize) -> Self {
        let (width_range, block_setting, last_channels): (_, Vec<Vec<usize>>, _) = match arch {
            Arch::UsMobilenetV1 => {
                ([0.25, 1.0], vec![vec![64, 1, 1], vec![128, 2, 2], vec![256, 2, 2], vec![512, 6, 2], vec![1024, 2, 2]], None)
            }
            Arch::UsMobilenetV2 => (
                [0.35, 1.0],
                vec![
                    vec![1, 16, 1, 1],
                    vec![6, 24, 2, 2],
                    vec![6, 32, 3, 2],
                    vec![6, 64, 4, 2],
                    vec![6, 96, 3, 1],
                    vec![6, 160, 3, 2],
                    vec![6, 320, 1, 1],
                ],
                Some(1280),
            ),
        };
        ModelConfig {
            arch,
            num_classes,
            input_channels: 3,
            divisor: 8,
            width_range,
            block_setting,
            stem_channels: 32,
            stem_stride: 2,
            last_channels,
            switchable_bn: None,
        }
    }

    /// The block table as rows, checking each row's length and values.
    pub fn rows(&self) -> Result<Vec<BlockRow>> {
        let bad = |msg: String| Error::InvalidConfig(msg);
        if self.block_setting.is_empty() {
            return Err(bad("block_setting has no rows".into()));
        }
        self.block_setting
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let r = match (self.arch, row.as_slice()) {
                    (Arch::UsMobilenetV1, &[c, n, s]) => BlockRow { t: 1, c, n, s },
                    (Arch::UsMobilenetV2, &[t, c, n, s]) => BlockRow { t, c, n, s },
                    (Arch::UsMobilenetV1, _) => return Err(bad(format!("block_setting row {i} is {row:?}; us_mobilenet_v1 rows are [c, n, s]"))),
                    (Arch::UsMobilenetV2, _) => return Err(bad(format!("block_setting row {i} is {row:?}; us_mobilenet_v2 rows are [t, c, n, s]"))),
                };
                if r.t == 0 || r.c == 0 || r.n == 0 || r.s == 0 {
                    return Err(bad(format!("block_setting row {i} is {row:?}; every entry must be at least 1")));
                }
                Ok(r)
            })
            .collect()
    }

    /// The width range, validated.
    pub fn range(&self) -> Result<WidthRange> {
        if self.width_range_unset() {
            return Err(Error::InvalidConfig("model.width_range is not set".into()));
        }
        let [lo, hi] = self.width_range;
        WidthRange::new(Width::new(lo)?, Width::new(hi)?)
    }

    /// Parameters of the full-width model (convs, BN affine pairs, classifier), counted from
    /// the options without building it: exact for a US-Net; an S-Net's private BN pairs are
    /// counted at full width, an upper bound. Saturates at `u128::MAX` for absurd options.
    pub fn param_count(&self) -> Result<u128> {
        let rows = self.rows()?;
        let d = self.divisor;
        let md = |v: usize| make_divisible(v as f64, d) as u128;
        let bn_copies = self.switchable_bn.as_ref().map_or(1, |w| w.len().max(1)) as u128;
        let bn = |c: u128| 2 * c * bn_copies;
        let v2 = self.arch == Arch::UsMobilenetV2;
        let stem = md(self.stem_channels);
        let mut total = (self.input_channels as u128) * stem * 9 + bn(stem);
        let mut channels = stem;
        // One block from `c_in` channels: expansion (v2, t != 1), depthwise 3x3, projection.
        let block = |c_in: u128, t: u128, out: u128| {
            let hidden = c_in.saturating_mul(t);
            let expand = if v2 && t != 1 { c_in.saturating_mul(hidden).saturating_add(bn(hidden)) } else { 0 };
            expand
                .saturating_add(hidden.saturating_mul(9).saturating_add(bn(hidden)))
                .saturating_add(hidden.saturating_mul(out).saturating_add(bn(out)))
        };
        for r in &rows {
            let out = md(r.c);
            let rest = block(out, r.t as u128, out).saturating_mul(r.n as u128 - 1);
            total = total.saturating_add(block(channels, r.t as u128, out)).saturating_add(rest);
            channels = out;
        }
        if let Some(last) = self.last_channels {
            let last = last as u128;
            total = total.saturating_add(channels.saturating_mul(last).saturating_add(bn(last)));
            channels = last;
        }
        let classes = self.num_classes as u128;
        Ok(total.saturating_add(channels.saturating_mul(classes)).saturating_add(classes))
    }

    /// Checks every option; [`crate::model::UsNet::init`] calls it, so that nothing is
    /// allocated for a model over [`MAX_PARAMS`] parameters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the option: a size of 0 or over [`MAX_DIM`], a block
    /// row that is not `[c, n, s]` / `[t, c, n, s]`, a bad width range, or a model of more
    /// than [`MAX_PARAMS`] parameters (with its count and size in GB).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidConfig(msg.into()));
        self.rows()?;
        self.range()?;
        let mut sizes = vec![
            ("num_classes", self.num_classes),
            ("input_channels", self.input_channels),
            ("divisor", self.divisor),
            ("stem_channels", self.stem_channels),
            ("stem_stride", self.stem_stride),
        ];
        sizes.extend(self.last_channels.map(|c| ("last_channels", c)));
        sizes.extend(self.block_setting.iter().flatten().map(|&v| ("a block_setting entry", v)));
        if let Some((name, v)) = sizes.iter().find(|(_, v)| *v > MAX_DIM) {
            return Err(Error::InvalidConfig(format!("{name} is {v}; at most {MAX_DIM} is allowed")));
        }
        if self.num_classes == 0 {
            return bad("num_classes must be at least 1");
        }
        if self.input_channels == 0 || self.stem_channels == 0 || self.stem_stride == 0 || self.divisor == 0 {
            return bad("input_channels, stem_channels, stem_stride and divisor must be at least 1");
        }
        if let Some(ws) = &self.switchable_bn {
            if ws.is_empty() {
                return bad("switchable_bn needs at least one width");
            }
            let range = self.range()?;
            for &w in ws {
                range.check(Width::new(w)?)?;
            }
        }
        match (self.arch, self.last_channels) {
            (Arch::UsMobilenetV2, None) | (Arch::UsMobilenetV2, Some(0)) => {
                return bad("us_mobilenet_v2 needs last_channels >= 1");
            }
            (Arch::UsMobilenetV1, Some(_)) => return bad("us_mobilenet_v1 has no last_channels"),
            _ => {}
        }
        let params = self.param_count()?;
        if params > MAX_PARAMS as u128 {
            return Err(Error::InvalidConfig(format!(
                "the model has {params} parameters ({:.1} GB as f32, before gradients and momentum); \
                 at most {MAX_PARAMS} ({:.1} GB) are allowed: check num_classes, last_channels, divisor and block_setting",
                params as f64 * 4e-9,
                MAX_PARAMS as f64 * 4e-9
            )));
        }
        Ok(())
    }

    /// The stem's full output channels, `make_divisible(stem_channels)`.
    pub fn stem_out(&self) -> usize {
        make_divisible(self.stem_channels as f64, self.divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_count_matches_the_built_model() {
        let device = crate::device::device(None).unwrap();
        let small = ModelConfig { switchable_bn: Some(vec![1.0, 0.5]), ..ModelConfig::imagenet(Arch::UsMobilenetV2, 10) };
        for config in [ModelConfig::imagenet(Arch::UsMobilenetV2, 1000), ModelConfig::imagenet(Arch::UsMobilenetV1, 1000), small] {
            let model = crate::model::UsNet::init(&config, &crate::init::Init::Counter { seed: 0 }, &device).unwrap();
            let built: usize = model.params().iter().map(|(_, _, t)| t.shape().iter().product::<usize>()).sum();
            let counted = config.param_count().unwrap();
            if config.switchable_bn.is_some() {
                assert!(counted >= built as u128 && counted < built as u128 * 11 / 10, "{counted} vs {built}");
            } else {
                assert_eq!(counted, built as u128, "{:?}", config.arch);
            }
        }
    }

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_allocated() {
        let base = ModelConfig::imagenet(Arch::UsMobilenetV2, 1000);
        type Edit = Box<dyn Fn(&mut ModelConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|c| c.num_classes = 1_000_000_000), "num_classes"),
            (Box::new(|c| c.last_channels = Some(4_000_000_000)), "last_channels"),
            (Box::new(|c| c.divisor = 1_000_000), "parameters"),
            (Box::new(|c| c.block_setting[3][2] = 100_000_000), "block_setting"),
            (Box::new(|c| c.block_setting[3][2] = 100_000), "parameters"),
            (Box::new(|c| c.num_classes = 1_000_000), "parameters"),
        ];
        for (edit, needle) in cases {
            let mut c = base.clone();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        // The error states the count and the limit.
        let c = ModelConfig { num_classes: 1_000_000, ..base.clone() };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("1281000000") || err.contains("parameters ("), "{err}");
        assert!(err.contains("at most 100000000"), "{err}");
    }
}
