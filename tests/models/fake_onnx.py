"""A tiny hand-made ONNX "detector" with known outputs, for tests that need exact numbers.

The graph outputs fixed anchors in the YOLOv8 layout ``(1, 4 + nc, N)``: boxes as given, and
class scores multiplied by the mean pixel value of the input (0..1). A uniform grey image of
value ``v`` therefore yields every score times ``v / 255``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_fake_detector(
    path: Path,
    boxes_xyxy: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float]],
    classes: Sequence[str],
    input_size: int = 320,
    thresholds: dict[str, float] | None = None,
    iou: float = 0.7,
    *,
    dynamic: bool = False,
) -> Path:
    """Write the model (with a gridwatch metadata record embedded) and return its path. With
    ``dynamic`` its input takes any height and width (as an export with dynamic axes); the
    boxes it outputs are the same whatever the input size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = np.asarray(boxes_xyxy, dtype=np.float32)
    xywh = np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]]
    )
    s = np.asarray(scores, dtype=np.float32).T  # (nc, N)
    n, nc = b.shape[0], len(classes)
    assert s.shape == (nc, n)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape111"], ["mean3"]),
        helper.make_node("Mul", ["scores", "mean3"], ["scaled"]),
        helper.make_node("Concat", ["boxes", "scaled"], ["output0"], axis=1),
    ]
    inits = [
        numpy_helper.from_array(xywh[None].astype(np.float32), "boxes"),
        numpy_helper.from_array(s[None], "scores"),
        numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), "shape111"),
    ]
    graph = helper.make_graph(
        nodes,
        "fake-detector",
        [
            helper.make_tensor_value_info(
                "images",
                TensorProto.FLOAT,
                [1, 3, "height", "width"] if dynamic else [1, 3, input_size, input_size],
            )
        ],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = {
        "schema": "gridwatch.detector-model",
        "v": 1,
        "model_version": "fake-1",
        "architecture": "fake",
        "classes": list(classes),
        "input_size": [input_size, input_size],
        "thresholds": thresholds or {},
        "iou": iou,
    }
    entry = model.metadata_props.add()
    entry.key, entry.value = "gridwatch", json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
