//! A [`FixedNet`] as an ONNX model (opset 13): each conv with its batch norm folded in,
//! ReLU6 as `Clip`, depthwise convs as `Conv` with `group`, residual `Add`s, global average
//! pooling, `Flatten` and `Gemm`. The batch dimension is symbolic (`batch`).

use prost::Message;

use super::onnx_proto::{
    attribute_type, AttributeProto, Dimension, DimValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeTensor, ValueInfoProto, FLOAT, INT64,
};
use crate::fixed::FixedNet;

/// The opset the graph is written for (`Clip` takes its bounds as inputs from 13 on).
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// The graph's input and output names.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";

/// The ONNX model of `net` on `[batch, channels, h, w]` inputs, with `metadata` as its
/// `metadata_props`, serialised.
pub fn to_onnx_bytes(net: &FixedNet, input_hw: [usize; 2], metadata: &[(String, String)]) -> Vec<u8> {
    to_model(net, input_hw, metadata).encode_to_vec()
}

fn to_model(net: &FixedNet, input_hw: [usize; 2], metadata: &[(String, String)]) -> ModelProto {
    let mut g = Graph::default();
    g.float("relu6.min", &[], &[0.0]);
    g.float("relu6.max", &[], &[6.0]);
    // The name of each conv's output after its activation (and residual add), by index.
    let mut outputs: Vec<String> = Vec::with_capacity(net.convs.len());
    let mut x = INPUT.to_string();
    for conv in &net.convs {
        let (w, b) = conv.folded();
        let shape: Vec<i64> = conv.weight_shape().iter().map(|&d| d as i64).collect();
        g.float(&format!("{}.weight", conv.name), &shape, &w);
        g.float(&format!("{}.bias", conv.name), &[conv.c_out as i64], &b);
        let (k, s, p) = (conv.kernel as i64, conv.stride as i64, conv.padding() as i64);
        let mut y = g.node(
            "Conv",
            &conv.name,
            &[&x, &format!("{}.weight", conv.name), &format!("{}.bias", conv.name)],
            vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s]), ints("pads", &[p, p, p, p]), int("group", conv.groups() as i64)],
        );
        if conv.relu6 {
            y = g.node("Clip", &format!("{}.relu6", conv.name), &[&y, "relu6.min", "relu6.max"], vec![]);
        }
        if let Some(from) = conv.shortcut {
            let shortcut = shortcut_to(&mut g, &outputs[from], net.convs[from].c_out, conv.c_out, &conv.name);
            y = g.node("Add", &format!("{}.residual", conv.name), &[&y, &shortcut], vec![]);
        }
        outputs.push(y.clone());
        x = y;
    }
    let pooled = g.node("GlobalAveragePool", "pool", &[&x], vec![]);
    let flat = g.node("Flatten", "flatten", &[&pooled], vec![int("axis", 1)]);
    let lin = &net.classifier;
    g.float(&format!("{}.weight", lin.name), &[lin.c_out as i64, lin.c_in as i64], &lin.weight);
    g.float(&format!("{}.bias", lin.name), &[lin.c_out as i64], &lin.bias);
    let (weight, bias) = (format!("{}.weight", lin.name), format!("{}.bias", lin.name));
    g.node_to("Gemm", &lin.name, &[&flat, &weight, &bias], vec![int("transB", 1)], OUTPUT);
    let [h, w] = input_hw;
    let input = value_info(INPUT, vec![batch(), fixed(net.input_channels), fixed(h), fixed(w)]);
    let output = value_info(OUTPUT, vec![batch(), fixed(net.num_classes())]);
    ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("usnet".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        model_version: Some(1),
        doc_string: Some(format!("{} at width {}, batch norm folded into the convs", net.arch, net.spec)),
        graph: Some(GraphProto {
            node: g.nodes,
            name: Some(format!("{}_{}", net.arch, net.spec.short())),
            initializer: g.initializers,
            input: vec![input],
            output: vec![output],
        }),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
    }
}

/// The shortcut `from` (with `c_from` channels) made to have `c_to`: as is, zero-padded at
/// the end of the channels, or cut to the first `c_to` (per-stage widths can differ across a
/// residual, see [`crate::fixed::FixedConv::shortcut`]).
fn shortcut_to(g: &mut Graph, from: &str, c_from: usize, c_to: usize, name: &str) -> String {
    use std::cmp::Ordering;
    match c_from.cmp(&c_to) {
        Ordering::Equal => from.to_string(),
        Ordering::Less => {
            let pads = format!("{name}.shortcut.pads");
            g.int64(&pads, &[8], &[0, 0, 0, 0, 0, (c_to - c_from) as i64, 0, 0]);
            g.node("Pad", &format!("{name}.shortcut.pad"), &[from, &pads], vec![])
        }
        Ordering::Greater => {
            let (starts, ends, axes) = (format!("{name}.shortcut.starts"), format!("{name}.shortcut.ends"), format!("{name}.shortcut.axes"));
            g.int64(&starts, &[1], &[0]);
            g.int64(&ends, &[1], &[c_to as i64]);
            g.int64(&axes, &[1], &[1]);
            g.node("Slice", &format!("{name}.shortcut.slice"), &[from, &starts, &ends, &axes], vec![])
        }
    }
}

/// Nodes and initializers as they are added.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// Adds a node named `name` with one output, `name` itself; returns it.
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        self.node_to(op, name, inputs, attribute, name)
    }

    /// Adds a node named `name` whose one output is `output`; returns it.
    fn node_to(&mut self, op: &str, name: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: &str) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            attribute,
        });
        output.to_string()
    }

    fn float(&mut self, name: &str, dims: &[i64], values: &[f32]) {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, values.len());
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto { dims: dims.to_vec(), data_type: Some(FLOAT), name: Some(name.into()), raw_data: Some(raw) });
    }

    fn int64(&mut self, name: &str, dims: &[i64], values: &[i64]) {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto { dims: dims.to_vec(), data_type: Some(INT64), name: Some(name.into()), raw_data: Some(raw) });
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(i), ints: Vec::new(), r#type: Some(attribute_type::INT) }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: None, ints: values.to_vec(), r#type: Some(attribute_type::INTS) }
}

fn batch() -> Dimension {
    Dimension { value: Some(DimValue::DimParam("batch".into())) }
}

fn fixed(n: usize) -> Dimension {
    Dimension { value: Some(DimValue::DimValue(n as i64)) }
}

fn value_info(name: &str, dim: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor { elem_type: Some(FLOAT), shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written reads back as the same message, and the fields ONNX requires are set.
    #[test]
    fn model_round_trips_through_prost() {
        let mut g = Graph::default();
        g.float("w", &[2], &[1.0, -2.0]);
        let y = g.node("Clip", "c", &["x", "relu6.min", "relu6.max"], vec![int("axis", 0)]);
        assert_eq!(y, "c");
        let model = ModelProto {
            ir_version: Some(IR_VERSION),
            graph: Some(GraphProto { node: g.nodes, initializer: g.initializers, ..Default::default() }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, model);
        let graph = back.graph.unwrap();
        // A zero-valued attribute is still written (proto2 `optional`).
        assert_eq!(graph.node[0].attribute[0].i, Some(0));
        assert_eq!(graph.initializer[0].raw_data.as_deref().unwrap(), [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
    }
}
