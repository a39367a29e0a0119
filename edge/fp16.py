"""Mixed-precision (fp16) ONNX for strongly typed TensorRT builds.

TensorRT 11 removed ``BuilderFlag.FP16``: an fp16 engine is built from a graph whose tensors are
already fp16. This converts an fp32 graph so that every tensor is fp16 except the attention
logits path that is numerically fragile: the ``Add`` of the relative-position bias and the
``Softmax`` after it run in fp32 (their bias constants stay fp32), with ``Cast`` nodes at the
borders. Graph inputs and outputs stay fp32, so callers feed and read fp32 as before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32_OPS = {"Softmax"}


def _fp32_nodes(graph: onnx.GraphProto) -> set[int]:
    """Indices of nodes kept in fp32: each Softmax and the Add that produces its input."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    keep = set()
    for i, node in enumerate(graph.node):
        if node.op_type in FP32_OPS:
            keep.add(i)
            j = producer.get(node.input[0])
            if j is not None and graph.node[j].op_type == "Add":
                keep.add(j)
    return keep


def convert_to_mixed_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` computing in fp16 except around Softmax (see module doc)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep = _fp32_nodes(graph)
    fp32_consumers: set[str] = set()
    fp16_consumers: set[str] = set()
    for i, node in enumerate(graph.node):
        (fp32_consumers if i in keep else fp16_consumers).update(node.input)

    # initializers: fp16 unless only fp32 nodes read them
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in fp32_consumers:
            init.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
            )
    initializer_names = {init.name for init in graph.initializer}
    fp32_initializers = {
        init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT
    }

    new_nodes: list[onnx.NodeProto] = []
    counter = 0

    def cast(name: str, to: int) -> str:
        nonlocal counter
        counter += 1
        out = f"{name}__to_{'fp32' if to == TensorProto.FLOAT else 'fp16'}_{counter}"
        new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"cast_{counter}"))
        return out

    # graph inputs arrive as fp32: cast once for the fp16 consumers
    renamed: dict[str, str] = {}
    for inp in graph.input:
        if (
            inp.name not in initializer_names
            and inp.type.tensor_type.elem_type == TensorProto.FLOAT
        ):
            renamed[inp.name] = cast(inp.name, TensorProto.FLOAT16)
    fp32_outputs_of_kept: set[str] = set()
    for i, node in enumerate(graph.node):
        if i in keep:
            inputs = []
            for name in node.input:
                if name in fp32_initializers or name in fp32_outputs_of_kept:
                    inputs.append(name)
                else:
                    inputs.append(cast(renamed.get(name, name), TensorProto.FLOAT))
            del node.input[:]
            node.input.extend(inputs)
            new_nodes.append(node)
            fp32_outputs_of_kept.update(node.output)
            continue
        for k, name in enumerate(node.input):
            if name in fp32_outputs_of_kept:
                node.input[k] = cast(name, TensorProto.FLOAT16)
            elif name in renamed:
                node.input[k] = renamed[name]
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                    attr.t.CopyFrom(
                        numpy_helper.from_array(
                            numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name
                        )
                    )
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
        new_nodes.append(node)

    # graph outputs leave as fp32
    output_map = {}
    for out in graph.output:
        if (
            out.type.tensor_type.elem_type == TensorProto.FLOAT
            and out.name not in fp32_outputs_of_kept
        ):
            internal = f"{out.name}__fp16"
            for node in new_nodes:
                for k, name in enumerate(node.output):
                    if name == out.name:
                        node.output[k] = internal
                for k, name in enumerate(node.input):
                    if name == out.name:
                        node.input[k] = internal
            output_map[out.name] = internal
    for name, internal in output_map.items():
        new_nodes.append(
            helper.make_node(
                "Cast", [internal], [name], to=TensorProto.FLOAT, name=f"cast_output_{name}"
            )
        )
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def precision_summary(model: onnx.ModelProto) -> dict[str, int]:
    """Count of initializer elements per data type name (for reports and tests)."""
    counts: dict[str, int] = {}
    for init in model.graph.initializer:
        name = TensorProto.DataType.Name(init.data_type)
        counts[name] = counts.get(name, 0) + int(np.prod(init.dims))
    return counts
