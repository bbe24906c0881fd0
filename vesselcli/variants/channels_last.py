"""The U-Net's float32 graph respelt so that ONNX Runtime's INT8 kernels run it channels-last.

    pixel_shuffle_upsampling(model) -> model   (an onnx.ModelProto; same function, float32)
    gemm_head(model) -> (model, names)         (the 1x1 head as one channels-last Gemm)

Both return the same float32 function (tested against the original graph); ``quantize_int8``
applies them before quantizing.

Upsampling.
ONNX Runtime's CPU provider has no INT8 transposed convolution: in a QDQ model each of the
decoder's upsamplings runs in float32 between a DequantizeLinear and a QuantizeLinear, in
channels-first layout, and forces a layout change (Transpose) on every tensor around it and
around the skip concatenation. On one core that was 17 of 103 ms per 544x544 DRIVE box for
the three transposed convolutions, plus about 15 ms of the layout changes and (de)quantization
around them (ONNX Runtime's profiler).

A 2x2 stride-2 transposed convolution is a 1x1 convolution to ``4 * C_out`` channels followed
by an interleave of those channels into a 2x2 block per input pixel:

    out[c, 2i + a, 2j + b] = bias[c] + sum_k w[k, c, a, b] * x[k, i, j]

The rewrite orders the 1x1 convolution's outputs as ``(a, b, c)``, so that in channels-last
memory each input pixel holds its 2x2 block row by row. The interleave is then spelt in
channels-last terms (Transpose to NHWC, Reshape, a Transpose that swaps one axis of size 2 with
the width, Reshape, Transpose back to NCHW): the INT8 1x1 convolution runs in ONNX Runtime's
channels-last QLinearConv, the interleave moves uint8 bytes, and ONNX Runtime's layout optimizer
cancels the outer Transposes against the ones it inserts around its channels-last kernels, so
the concatenation with the skip runs channels-last too. The output shape comes from the graph
input's shape (each tensor's spatial reduction factor is traced from the stride-2 max poolings
and transposed convolutions before it), never from a quantized tensor, which would add a
DequantizeLinear of the whole tensor just to read its shape.

The float32 function is unchanged (tested against the original graph); only models whose input
height and width are multiples of the network's total pooling factor are supported, which the
engines guarantee by padding to the model's ``tile_multiple``.
"""
from __future__ import annotations

import numpy as np


def _attributes(node) -> dict:  # noqa: ANN001 - an onnx.NodeProto
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _replace_graph(model, nodes: list, initializers: list) -> None:  # noqa: ANN001 - an onnx.ModelProto
    """``model``'s nodes become ``nodes``, ``initializers`` are added, unused ones dropped; checked."""
    import onnx

    graph = model.graph
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in [*graph.initializer, *initializers] if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)


def _spatial_factors(model) -> dict[str, int]:  # noqa: ANN001 - an onnx.ModelProto
    """Reduction factor of every tensor's height and width against the graph input's."""
    factors = {model.graph.input[0].name: 1}
    for node in model.graph.node:
        factor = max((factors.get(name, 0) for name in node.input), default=0)
        attributes = _attributes(node)
        if node.op_type in ("MaxPool", "AveragePool") and list(attributes.get("strides", [1, 1])) == [2, 2]:
            factor *= 2
        elif node.op_type == "ConvTranspose":
            factor //= 2
        for name in node.output:
            factors[name] = factor
    return factors


def _is_pixel_block(node, attributes: dict) -> bool:  # noqa: ANN001
    return (node.op_type == "ConvTranspose" and list(attributes.get("kernel_shape", [])) == [2, 2]
            and list(attributes.get("strides", [])) == [2, 2] and attributes.get("group", 1) == 1
            and not any(attributes.get("pads", [0, 0, 0, 0])) and not any(attributes.get("output_padding", [0, 0]))
            and list(attributes.get("dilations", [1, 1])) == [1, 1])


def pixel_shuffle_upsampling(model):  # noqa: ANN001, ANN201 - onnx.ModelProto in and out
    """A copy of ``model`` with every 2x2 stride-2 transposed convolution spelt channels-last.

    ``model``'s ConvTranspose weights and biases must be initializers. Returns a new
    ModelProto; ``model`` is not changed. Raises ``ValueError`` if a transposed convolution's
    input is not at a whole reduction factor of 2 or more (not a U-Net decoder).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    factors = _spatial_factors(model)
    added: list = []

    def constant(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    image = graph.input[0].name
    nodes = []
    for node in graph.node:
        attributes = _attributes(node)
        if not _is_pixel_block(node, attributes):
            nodes.append(node)
            continue
        source = node.input[0]
        factor = factors.get(source, 0)
        if factor < 2 or factor % 2:
            raise ValueError(f"{node.name or node.output[0]}: input at reduction factor {factor}; expected an even factor")
        w = numpy_helper.to_array(weights[node.input[1]])  # (C_in, C_out, 2, 2)
        c_in, c_out = w.shape[:2]
        bias = numpy_helper.to_array(weights[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.zeros(c_out, np.float32)
        p = f"pixel_shuffle/{node.name or node.output[0]}"
        if "pixel_shuffle/nhw" not in (init.name for init in added):  # the input's (N, H, W), once
            nodes[:0] = [
                helper.make_node("Shape", [image], ["pixel_shuffle/image_shape"], name="pixel_shuffle/image_shape"),
                helper.make_node("Gather", ["pixel_shuffle/image_shape", constant("pixel_shuffle/nhw", np.array([0, 2, 3], np.int64))],
                                 ["pixel_shuffle/image_nhw"], name="pixel_shuffle/image_nhw", axis=0),
            ]
        w1x1 = w.transpose(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1).astype(np.float32)  # outputs ordered (a, b, c)
        b1x1 = np.tile(bias.astype(np.float32), 4)
        nodes += [
            helper.make_node("Conv", [source, constant(p + "/w", w1x1), constant(p + "/b", b1x1)], [p + "/blocks"],
                             name=p + "/conv1x1", kernel_shape=[1, 1]),
            helper.make_node("Transpose", [p + "/blocks"], [p + "/nhwc"], name=p + "/to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [p + "/nhwc", constant(p + "/rows_shape", np.array([0, 0, 0, 2, 2 * c_out], np.int64))],
                             [p + "/rows"], name=p + "/split_rows"),
            helper.make_node("Transpose", [p + "/rows"], [p + "/interleaved"], name=p + "/interleave", perm=[0, 1, 3, 2, 4]),
            helper.make_node("Div", ["pixel_shuffle/image_nhw", constant(p + "/factor", np.array([1, factor // 2, factor // 2], np.int64))],
                             [p + "/nhw"], name=p + "/nhw"),
            helper.make_node("Concat", [p + "/nhw", constant(p + "/c", np.array([c_out], np.int64))], [p + "/shape"],
                             name=p + "/shape", axis=0),
            helper.make_node("Reshape", [p + "/interleaved", p + "/shape"], [p + "/up"], name=p + "/merge"),
            helper.make_node("Transpose", [p + "/up"], [node.output[0]], name=p + "/to_nchw", perm=[0, 3, 1, 2]),
        ]
    _replace_graph(model, nodes, added)
    return model


def gemm_head(model):  # noqa: ANN001, ANN201 - onnx.ModelProto in, (ModelProto, list[str]) out
    """A copy of ``model`` whose last 1x1 convolution (the head) is one channels-last Gemm.

    Returns the model and the name of the Gemm node, which ``quantize_int8``
    keeps in float32: the logits must keep float precision (an INT8 head gives a probability
    map of about 85 levels inside the FOV: ``--save-probabilities`` and AUC need more). As a
    float32 1x1 convolution the head made ONNX Runtime dequantize, transpose to channels-first
    and reorder the last 16-channel feature map; as a Gemm over the channels-last tensor's rows
    it only dequantizes it. Raises ``ValueError`` when the graph does not end in a 1x1 convolution.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    output = graph.output[0].name
    head = next((n for n in graph.node if output in n.output), None)
    attributes = _attributes(head) if head is not None else {}
    if head is None or head.op_type != "Conv" or list(attributes.get("kernel_shape", [])) != [1, 1] or attributes.get("group", 1) != 1:
        raise ValueError("the graph does not end in a 1x1 convolution")
    w = numpy_helper.to_array(weights[head.input[1]])  # (C_out, C_in, 1, 1)
    c_out, c_in = w.shape[:2]
    if c_out != 1:
        raise ValueError(f"the head has {c_out} outputs; expected one vessel logit")
    bias = numpy_helper.to_array(weights[head.input[2]]) if len(head.input) > 2 and head.input[2] else np.zeros(c_out, np.float32)
    p = "gemm_head"
    names = [p + "/gemm"]
    image = graph.input[0].name
    # (N, C, H, W) -> channels-last rows of C -> one Gemm (bias fused) -> (N*H*W, 1), which is
    # already the memory of the (N, 1, H, W) logits: a Reshape to the input's N, H, W ends it.
    replacement = [
        helper.make_node("Transpose", [head.input[0]], [p + "/nhwc"], name=p + "/to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [p + "/nhwc", p + "/rows_shape"], [p + "/rows"], name=p + "/rows"),
        helper.make_node("Gemm", [p + "/rows", p + "/w", p + "/b"], [p + "/logit_rows"], name=names[0]),
        helper.make_node("Shape", [image], [p + "/image_shape"], name=p + "/image_shape"),
        helper.make_node("Gather", [p + "/image_shape", p + "/n_index"], [p + "/n"], name=p + "/n", axis=0),
        helper.make_node("Gather", [p + "/image_shape", p + "/hw_index"], [p + "/hw"], name=p + "/hw", axis=0),
        helper.make_node("Concat", [p + "/n", p + "/one", p + "/hw"], [p + "/n1hw"], name=p + "/n1hw", axis=0),
        helper.make_node("Reshape", [p + "/logit_rows", p + "/n1hw"], [output], name=p + "/to_nchw"),
    ]
    nodes = [new for node in graph.node for new in (replacement if node is head else [node])]
    _replace_graph(model, nodes, [
        numpy_helper.from_array(w.reshape(c_out, c_in).T.astype(np.float32).copy(), p + "/w"),
        numpy_helper.from_array(bias.astype(np.float32), p + "/b"),
        numpy_helper.from_array(np.array([-1, c_in], np.int64), p + "/rows_shape"),
        numpy_helper.from_array(np.array([0], np.int64), p + "/n_index"),
        numpy_helper.from_array(np.array([1], np.int64), p + "/one"),
        numpy_helper.from_array(np.array([2, 3], np.int64), p + "/hw_index"),
    ])
    return model, names
