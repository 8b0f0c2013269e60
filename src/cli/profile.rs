//! `usnet profile`: MACs and parameters per width.

use anyhow::Context;
use clap::Args;
use usnet::profile::{width_cost, WidthCost};
use usnet::width::parse_width_list;
use usnet::{Arch, Init, ModelConfig, UsNet, WidthSpec};

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Architecture: us_mobilenet_v1 or us_mobilenet_v2 (official ImageNet block tables).
    #[arg(long, default_value = "us_mobilenet_v2")]
    arch: Arch,
    /// Square input size in pixels.
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// Number of classes of the classifier.
    #[arg(long, default_value_t = 1000)]
    num_classes: usize,
    /// Widths: a list (1.0,0.75,0.5), a grid MIN:MAX:STEP (0.35:1.0:0.05), or per-stage
    /// specs with '/' between the stem and each block-table row (v2's head is fixed and has
    /// no entry). At most 1,000 widths; a width that gives the same channels as an earlier
    /// one is merged into it. Default: the range's ends.
    #[arg(long)]
    widths: Option<String>,
    /// Print a JSON array of {"width", "macs", "params"} instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.input_size >= 1, "--input-size must be at least 1");
    anyhow::ensure!(args.num_classes >= 1, "--num-classes must be at least 1");
    let config = ModelConfig::imagenet(args.arch, args.num_classes);
    let device = usnet::device::device(None)?;
    // Structure is all the count needs; zero-cost init keeps this instant.
    let model = UsNet::init(&config, &Init::Counter { seed: 0 }, &device)?;
    let specs: Vec<WidthSpec> = match &args.widths {
        Some(s) => parse_width_list(s).with_context(|| format!("parsing --widths {s:?}"))?,
        None => {
            let (min, max) = model.min_max();
            vec![max, min]
        }
    };
    let specs = super::distinct_widths(&model, specs, args.arch.name())?;
    let costs = specs
        .iter()
        .map(|spec| width_cost(&model, spec, args.input_size).with_context(|| format!("{} at width {spec}", args.arch)))
        .collect::<anyhow::Result<Vec<WidthCost>>>()?;
    if args.json {
        let rows: Vec<serde_json::Value> = costs
            .iter()
            .zip(&specs)
            .map(|(c, spec)| {
                let width = match spec {
                    WidthSpec::Uniform(w) => serde_json::json!(w.get()),
                    WidthSpec::PerStage(_) => serde_json::json!(c.width),
                };
                serde_json::json!({ "width": width, "macs": c.macs, "params": c.params })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{} at {}x{}, {} classes", args.arch, args.input_size, args.input_size, args.num_classes);
        println!("{:>24} {:>14} {:>12}", "width", "MACs", "params");
        for c in &costs {
            println!("{:>24} {:>13.2}M {:>11.3}M", c.width, c.macs as f64 / 1e6, c.params as f64 / 1e6);
        }
    }
    Ok(())
}
