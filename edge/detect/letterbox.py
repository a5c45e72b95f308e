"""Letterbox a frame to the network input exactly as ultralytics' LetterBox does; map boxes back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class LetterboxGeometry:
    """How a frame was resized and padded: the resized size and the padding on each side."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_wh: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int


def letterbox_geometry(frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> LetterboxGeometry:
    """The resize and centred padding ultralytics uses (auto=False, scaleup=True, center=True)."""
    h, w = frame_hw
    new_h, new_w = input_hw
    r = min(new_h / h, new_w / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (new_w - unpad_w) / 2, (new_h - unpad_h) / 2
    return LetterboxGeometry(
        frame_hw=(h, w),
        input_hw=(new_h, new_w),
        resized_wh=(unpad_w, unpad_h),
        top=round(dh - 0.1),
        bottom=round(dh + 0.1),
        left=round(dw - 0.1),
        right=round(dw + 0.1),
    )


def rect_input_hw(
    frame_hw: tuple[int, int], input_hw: tuple[int, int], stride: int = 32
) -> tuple[int, int]:
    """The smallest input that holds the frame letterboxed into ``input_hw`` with padding to
    a multiple of ``stride`` (ultralytics' ``auto`` letterbox): 320 x 192 for a 16:9 frame
    and a 320 x 320 model, the square itself for a square frame."""
    geo = letterbox_geometry(frame_hw, input_hw)
    w, h = geo.resized_wh
    return h + (input_hw[0] - h) % stride, w + (input_hw[1] - w) % stride


def letterbox(
    frame_bgr: NDArray[np.uint8], input_hw: tuple[int, int]
) -> tuple[NDArray[np.uint8], LetterboxGeometry]:
    """Resize keeping aspect ratio (bilinear) and pad with grey 114 to ``input_hw``."""
    geo = letterbox_geometry((frame_bgr.shape[0], frame_bgr.shape[1]), input_hw)
    img: Any = frame_bgr
    if (img.shape[1], img.shape[0]) != geo.resized_wh:
        img = cv2.resize(img, geo.resized_wh, interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(
        img, geo.top, geo.bottom, geo.left, geo.right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return np.asarray(padded, dtype=np.uint8), geo


def to_input_tensor(
    img_bgr: NDArray[np.uint8], dtype: type[np.floating[Any]] = np.float32
) -> NDArray[np.floating[Any]]:
    """A letterboxed BGR image as a 1x3xHxW RGB tensor scaled to [0, 1]."""
    chw = img_bgr[:, :, ::-1].transpose(2, 0, 1)
    tensor = np.ascontiguousarray(chw, dtype=np.float32)[None] / np.float32(255.0)
    return tensor.astype(dtype, copy=False)


def scale_boxes_to_frame(
    boxes_xyxy: NDArray[np.float32],
    input_hw: tuple[int, int],
    frame_hw: tuple[int, int],
    *,
    clip: bool = True,
) -> NDArray[np.float32]:
    """Map boxes from network-input pixels back to frame pixels, clipped (as scale_boxes)."""
    out = boxes_xyxy.astype(np.float32, copy=True)
    gain = min(input_hw[0] / frame_hw[0], input_hw[1] / frame_hw[1])
    new_h, new_w = (max(round(x * gain), 1) for x in frame_hw)
    gain_y, gain_x = new_h / frame_hw[0], new_w / frame_hw[1]
    pad_x = round((input_hw[1] - new_w) / 2 - 0.1)
    pad_y = round((input_hw[0] - new_h) / 2 - 0.1)
    out[:, [0, 2]] -= pad_x
    out[:, [1, 3]] -= pad_y
    out[:, [0, 2]] /= gain_x
    out[:, [1, 3]] /= gain_y
    if clip:
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, frame_hw[1])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, frame_hw[0])
    return out
