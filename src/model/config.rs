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
    /// `[min, max]` width.
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

impl ModelConfig {
    /// The official ImageNet configuration of `arch` with `num_classes` outputs.
    pub fn imagenet(arch: Arch, num_classes: usize) -> Self {
        match arch {
            Arch::UsMobilenetV1 => ModelConfig {
                arch,
                num_classes,
                input_channels: 3,
                divisor: 8,
                width_range: [0.25, 1.0],
                block_setting: vec![vec![64, 1, 1], vec![128, 2, 2], vec![256, 2, 2], vec![512, 6, 2], vec![1024, 2, 2]],
                stem_channels: 32,
                stem_stride: 2,
                last_channels: None,
                switchable_bn: None,
            },
            Arch::UsMobilenetV2 => ModelConfig {
                arch,
                num_classes,
                input_channels: 3,
                divisor: 8,
                width_range: [0.35, 1.0],
                block_setting: vec![
                    vec![1, 16, 1, 1],
                    vec![6, 24, 2, 2],
                    vec![6, 32, 3, 2],
                    vec![6, 64, 4, 2],
                    vec![6, 96, 3, 1],
                    vec![6, 160, 3, 2],
                    vec![6, 320, 1, 1],
                ],
                stem_channels: 32,
                stem_stride: 2,
                last_channels: Some(1280),
                switchable_bn: None,
            },
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
        let [lo, hi] = self.width_range;
        WidthRange::new(Width::new(lo)?, Width::new(hi)?)
    }

    /// Checks every option; [`crate::model::UsNet::init`] calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::InvalidConfig(msg.into()));
        self.rows()?;
        self.range()?;
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
                bad("us_mobilenet_v2 needs last_channels >= 1")
            }
            (Arch::UsMobilenetV1, Some(_)) => bad("us_mobilenet_v1 has no last_channels"),
            _ => Ok(()),
        }
    }

    /// The stem's full output channels, `make_divisible(stem_channels)`.
    pub fn stem_out(&self) -> usize {
        make_divisible(self.stem_channels as f64, self.divisor)
    }
}
