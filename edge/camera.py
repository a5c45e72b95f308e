"""One camera's pipeline in its own thread: source → motion gate → detector → tracker → events.

The worker reads sampled frames, lets the motion gate decide whether the detector runs (the
tracker forces runs while a track waits to be confirmed or cleared, and so do pending
commands), filters detections by class rules, zones and masks, and hands every track change
to ``emit`` as an ``Event`` builder; a change whose event ``emit`` could not store is not
taken (the track stays as it was, ``Tracker.keep_unreported``), so the next check retries it.
A lost source reconnects with backoff; a bad frame is skipped; a model that does not load puts
the camera in ``error`` (retried every minute and on any config change) while the other
cameras go on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from broker.messages import Event, Evidence
from config.clock import Clock
from config.site import ClassRule
from edge.confirm import ConfirmRule
from edge.detect import Detection, Detector, build_detector
from edge.evidence import Mark, make_evidence
from edge.geo import GroundMapping
from edge.motion import MotionGate
from edge.settings import EdgeCamera, EdgeSettings
from edge.sources import CorruptFrame, Frame, FrameSource, SourceEnded, SourceError, open_source
from edge.track import Candidate, TrackChange, Tracker
from edge.zones import RegionFilter, foot_point

log = logging.getLogger(__name__)

CameraState = Literal["ok", "connecting", "reconnecting", "error", "disabled"]
EventBuilder = Callable[[int], Event]
Emit = Callable[[EventBuilder], bool]  # True: stored (it will be published)
MODEL_RETRY_S = 60.0
ERROR_SHOWN_S = 300.0  # a problem stays in the status this long after it last happened


class DetectorLoadError(RuntimeError):
    """A detector config that could not be turned into a working detector."""


class SharedDetector:
    """A loaded detector shared by the cameras with the same config; one inference at a time."""

    def __init__(self, key: str, detector: Detector) -> None:
        self.key = key
        self.detector = detector
        self.closed = False
        self._lock = threading.Lock()

    def detect(self, image: NDArray[np.uint8]) -> tuple[list[Detection], float]:
        """Detections and the inference time in milliseconds (waiting for the lock excluded)."""
        with self._lock:
            if self.closed:
                raise DetectorLoadError("the detector was replaced by a new configuration")
            start = time.perf_counter()
            dets = self.detector.detect(image)
            return dets, (time.perf_counter() - start) * 1000

    def close(self) -> None:
        """Free the model once no inference runs on it."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self.detector.close()


class DetectorPool:
    """Builds detectors on demand, once per distinct config; remembers failures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[str, SharedDetector] = {}

    @staticmethod
    def key(config: dict[str, Any]) -> str:
        return json.dumps(config, sort_keys=True, default=str)

    def get(self, config: dict[str, Any]) -> SharedDetector:
        key = self.key(config)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            try:
                detector = build_detector(config)
            except Exception as exc:
                model = config.get("model", "?")
                raise DetectorLoadError(
                    f"detector {config.get('type')!r} with model {model} did not load: {exc}"
                ) from exc
            shared = SharedDetector(key, detector)
            self._loaded[key] = shared
            return shared

    def loaded(self) -> list[SharedDetector]:
        with self._lock:
            return list(self._loaded.values())

    def retain_only(self, keys: set[str]) -> None:
        """Close detectors no camera uses any more."""
        with self._lock:
            for key in [k for k in self._loaded if k not in keys]:
                self._loaded.pop(key).close()


@dataclass
class CheckRequest:
    """A command's wish: the next ``checks`` frames (with detections when ``detect``)."""

    checks: int
    detect: bool
    on_done: Callable[[list[tuple[Frame, list[Detection] | None]]], None]
    deadline: float
    seen: list[tuple[Frame, list[Detection] | None]] = field(default_factory=list)


@dataclass
class CameraCounters:
    """Cumulative counters the status report turns into rates."""

    samples: int = 0
    checks: int = 0
    inference_ms_total: float = 0.0
    corrupt_frames: int = 0
    reconnects: int = 0
    events: int = 0


@dataclass(frozen=True)
class CameraSnapshot:
    """What the status report needs from a camera at one moment."""

    camera_id: str
    state: CameraState
    counters: CameraCounters
    skipped_ratio: float
    active_tracks: int
    last_frame: datetime | None
    error: str | None
    model_version: str | None


def clip_box(d: Detection, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The detection's box as fractions of the frame, clipped; None when it is empty."""
    x1 = min(max(d.x1 / width, 0.0), 1.0)
    y1 = min(max(d.y1 / height, 0.0), 1.0)
    x2 = min(max(d.x2 / width, 0.0), 1.0)
    y2 = min(max(d.y2 / height, 0.0), 1.0)
    if x2 <= x1 or y2 <= y1:
        return None
    return (round(x1, 5), round(y1, 5), round(x2, 5), round(y2, 5))


class CameraWorker:
    """The thread that watches one camera."""

    def __init__(
        self,
        camera: EdgeCamera,
        settings: EdgeSettings,
        detector_config: dict[str, Any],
        pool: DetectorPool,
        emit: Emit,
        clock: Clock,
    ) -> None:
        self.camera = camera
        self.settings = settings
        self.detector_config = detector_config
        self.pool = pool
        self.emit = emit
        self.clock = clock
        self.counters = CameraCounters()
        self.state: CameraState = "connecting"
        self.error: str | None = None
        self._error_at = 0.0
        self.last_frame: datetime | None = None
        self.last_image: NDArray[np.uint8] | None = None
        self.tracker = Tracker(settings.tracking)
        self.gate = MotionGate(camera.motion or settings.motion, camera.masks)
        self.regions = RegionFilter(camera.zones, camera.masks)
        self.ground = GroundMapping(camera.ground_plane)
        self.detector: SharedDetector | None = None
        self._detector_failed_at: float | None = None
        self._last_check_t = float("-inf")
        self._pending: tuple[EdgeCamera, EdgeSettings, dict[str, Any]] | None = None
        self._requests: list[CheckRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reopen = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{camera.id}", daemon=True)
        self.source: FrameSource | None = None
        self.ended = threading.Event()

    # -- control -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.camera.id

    def start(self) -> None:
        if not self.camera.enabled:
            self.state = "disabled"
            self.ended.set()
            return
        self._thread.start()

    def stop(self, timeout_s: float = 15) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._fail_requests("camera stopped")

    def alive(self) -> bool:
        return self._thread.is_alive()

    def configure(
        self, camera: EdgeCamera, settings: EdgeSettings, detector_config: dict[str, Any]
    ) -> None:
        """Apply new settings at the next frame (zones, masks, rules, rate, model, source)."""
        with self._lock:
            self._pending = (camera, settings, detector_config)

    def request(
        self,
        checks: int,
        detect: bool,
        timeout_s: float,
        on_done: Callable[[list[tuple[Frame, list[Detection] | None]]], None],
    ) -> None:
        """Run ``on_done`` with the next ``checks`` frames (and their detections)."""
        req = CheckRequest(checks, detect, on_done, time.monotonic() + timeout_s)
        if not self.alive():
            on_done([])
            return
        with self._lock:
            self._requests.append(req)

    def snapshot(self) -> CameraSnapshot:
        d = self.detector
        recent = self.error if time.monotonic() - self._error_at < ERROR_SHOWN_S else None
        return CameraSnapshot(
            camera_id=self.camera.id,
            state=self.state,
            counters=CameraCounters(**vars(self.counters)),
            skipped_ratio=self.gate.skipped_ratio,
            active_tracks=len(self.tracker.tracks),
            last_frame=self.last_frame,
            error=recent,
            model_version=d.detector.model_version if d is not None else None,
        )

    # -- the loop ------------------------------------------------------------------------
    def _set_state(self, state: CameraState, error: str | None = None) -> None:
        """Change state; an error is logged (once while it repeats) and shown in the status."""
        if error is not None:
            if error != self.error:
                log.error(
                    "camera %s: %s", self.camera.id, error, extra={"camera_id": self.camera.id}
                )
            self.error = error
            self._error_at = time.monotonic()
        if state == "ok" and self.state != "ok":
            log.info(
                "camera %s: receiving frames", self.camera.id, extra={"camera_id": self.camera.id}
            )
        self.state = state

    def _open(self) -> FrameSource:
        cam = self.camera
        src = open_source(
            cam.source,
            cam.sample_fps,
            self.clock,
            self._stop,
            loop=cam.loop,
            realtime=cam.realtime,
            origin=cam.clock_origin,
        )
        src.open()
        return src

    def _run(self) -> None:
        backoff = self.camera.reconnect_min_s
        try:
            while not self._stop.is_set():
                try:
                    self.source = self._open()
                except SourceEnded:
                    break
                except SourceError as exc:
                    self.counters.reconnects += 1
                    self._set_state("reconnecting", f"{exc}; retrying in {backoff:.0f}s")
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, self.camera.reconnect_max_s)
                    continue
                try:
                    self._watch(self.source)
                    backoff = self.camera.reconnect_min_s
                except SourceEnded as exc:
                    if self._stop.is_set():
                        break
                    log.info(
                        "camera %s: %s", self.camera.id, exc, extra={"camera_id": self.camera.id}
                    )
                    self._set_state("disabled")
                    break
                except SourceError as exc:
                    self.counters.reconnects += 1
                    self._set_state("reconnecting", f"{exc}; retrying in {backoff:.0f}s")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.camera.reconnect_max_s)
                finally:
                    self.source.close()
        except Exception as exc:
            log.exception(
                "camera %s worker failed", self.camera.id, extra={"camera_id": self.camera.id}
            )
            self._set_state("error", f"camera worker failed: {exc}")
        finally:
            self.ended.set()
            self._fail_requests("camera stopped")

    def _watch(self, source: FrameSource) -> None:
        self._reopen.clear()
        while not self._stop.is_set() and not self._reopen.is_set():
            try:
                frame = source.read()
            except CorruptFrame as exc:
                self.counters.corrupt_frames += 1
                self._set_state(self.state, f"corrupt frame skipped: {exc}")
                if self.counters.corrupt_frames % 100 == 0:
                    self.error = None  # log a long run of bad frames again now and then
                continue
            try:
                self.process(frame)
            except Exception as exc:
                message = f"frame processing failed: {exc}"
                if message != self.error:
                    log.exception(
                        "camera %s: %s",
                        self.camera.id,
                        message,
                        extra={"camera_id": self.camera.id},
                    )
                self.state, self.error, self._error_at = "error", message, time.monotonic()
        if self._stop.is_set():
            raise SourceEnded("stopping")

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        camera, settings, det_config = pending
        old = self.camera
        self.camera, self.settings = camera, settings
        opened_as = (old.source, old.loop, old.realtime, old.clock_origin)
        if (camera.source, camera.loop, camera.realtime, camera.clock_origin) != opened_as:
            self._reopen.set()
        if self.source is not None:
            self.source.sample_fps = camera.sample_fps
        self.gate.configure(camera.motion or settings.motion, camera.masks)
        self.regions = RegionFilter(camera.zones, camera.masks)
        self.ground = GroundMapping(camera.ground_plane)
        self.tracker.settings = settings.tracking
        if det_config != self.detector_config:
            self.detector_config = det_config
            self.detector = None
            self._detector_failed_at = None
        log.info("camera %s: configuration applied", camera.id, extra={"camera_id": camera.id})

    def _ensure_detector(self) -> SharedDetector | None:
        if self.detector is not None:
            return self.detector
        now = time.monotonic()
        if self._detector_failed_at is not None and now - self._detector_failed_at < MODEL_RETRY_S:
            return None
        try:
            self.detector = self.pool.get(self.detector_config)
            self._detector_failed_at = None
        except DetectorLoadError as exc:
            self._detector_failed_at = now
            self._set_state("error", str(exc))
        return self.detector

    def class_rule(self, class_name: str) -> ClassRule:
        """The class's rule on this camera; unconfigured classes start at the model's own
        operating threshold."""
        model = self.detector.detector.operating_thresholds if self.detector is not None else {}
        return self.settings.rule_for(self.camera, class_name, model.get(class_name))

    def rule(self, class_name: str) -> ConfirmRule:
        return ConfirmRule.of(self.class_rule(class_name), self.settings.tracking)

    def candidates(self, dets: list[Detection], width: int, height: int) -> list[Candidate]:
        """Detections this camera may report: class rules, area, zones and masks applied."""
        out = []
        for d in dets:
            if d.class_name in self.settings.ignore_classes:
                continue
            rule = self.class_rule(d.class_name)
            if d.confidence < rule.keep_confidence:
                continue
            box = clip_box(d, width, height)
            if box is None or (box[2] - box[0]) * (box[3] - box[1]) < rule.min_area:
                continue
            if not self.regions.check(box).admitted:
                continue
            out.append(
                Candidate(d.class_name, d.confidence, box, d.confidence >= rule.min_confidence)
            )
        return out

    def process(self, frame: Frame) -> None:
        """One sampled frame through gate, detector and tracker."""
        self._apply_pending()
        self.counters.samples += 1
        self.last_frame = frame.ts
        self.last_image = frame.image
        with self._lock:
            requests = list(self._requests)
        wants_detection = any(r.detect for r in requests)
        pending = self.tracker.needs_checks() and (
            frame.t - self._last_check_t >= self.settings.tracking.pending_check_interval_s
        )
        decision = self.gate.observe(frame.image, frame.t, force=wants_detection or pending)
        detections: list[Detection] | None = None
        if decision.run:
            detector = self._ensure_detector()
            if detector is not None and detector.closed:
                self.detector = detector = None
                detector = self._ensure_detector()
            if detector is not None:
                detections, ms = detector.detect(frame.image)
                self._last_check_t = frame.t
                self.counters.checks += 1
                self.counters.inference_ms_total += ms
                h, w = frame.image.shape[:2]
                changes = self.tracker.check(self.candidates(detections, w, h), frame.t, self.rule)
                for change in changes:
                    self._emit(change, frame, detector)
        if self.detector is not None or self._detector_failed_at is None:
            self._set_state("ok")
        self._serve(requests, frame, detections)

    # -- events --------------------------------------------------------------------------
    def _emit(self, change: TrackChange, frame: Frame, detector: SharedDetector) -> None:
        if change.action == "drop":
            return
        st = change.state
        cam = self.camera
        first_seen = frame.ts - timedelta(seconds=max(0.0, frame.t - st.first_seen))
        position = self.ground.to_geo(*foot_point(st.box)) or cam.position
        snapshot: Evidence | None = None
        if change.action == "new":
            label = f"{change.class_name} {st.confidence:.2f}"
            try:
                snapshot = make_evidence(
                    frame.image, [Mark(st.box, label)], st.box, self.settings.evidence
                )
            except Exception:
                log.exception(
                    "camera %s: no snapshot for track %s",
                    cam.id,
                    change.track_id,
                    extra={"camera_id": cam.id},
                )
        device_id = self.settings.device_id
        model_version = detector.detector.model_version
        action = change.action

        def build(seq: int) -> Event:
            return Event(
                event_id=uuid.uuid4(),
                device_id=device_id,
                source_id=cam.id,
                source_type="camera",
                kind=change.class_name,
                state=action,
                seq=seq,
                ts=frame.ts,
                track_id=change.track_id,
                confidence=round(min(max(st.confidence, 0.0), 1.0), 4),
                bbox=st.box,
                position=position,
                first_seen=first_seen,
                model_version=model_version,
                snapshot=snapshot,
            )

        stored = self.emit(build)
        if stored:
            self.counters.events += 1
        else:
            self.tracker.keep_unreported(change)
        log.log(
            logging.INFO if stored else logging.WARNING,
            "camera %s: %s %s (track %s, conf %.2f)%s",
            cam.id,
            action,
            change.class_name,
            change.track_id,
            st.confidence,
            "" if stored else " not stored; the next check that still sees it so retries",
            extra={"camera_id": cam.id},
        )

    # -- commands ------------------------------------------------------------------------
    def _serve(
        self, requests: list[CheckRequest], frame: Frame, detections: list[Detection] | None
    ) -> None:
        if not requests:
            return
        now = time.monotonic()
        finished: list[CheckRequest] = []
        for r in requests:
            if r.detect and detections is None:
                if now > r.deadline:
                    finished.append(r)
                continue
            r.seen.append((frame, detections if r.detect else None))
            if len(r.seen) >= r.checks or now > r.deadline:
                finished.append(r)
        with self._lock:
            self._requests = [r for r in self._requests if r not in finished]
        for r in finished:
            try:
                r.on_done(r.seen)
            except Exception:
                log.exception(
                    "camera %s: command callback failed",
                    self.camera.id,
                    extra={"camera_id": self.camera.id},
                )

    def _fail_requests(self, why: str) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for r in requests:
            log.warning(
                "camera %s: command not served: %s",
                self.camera.id,
                why,
                extra={"camera_id": self.camera.id},
            )
            try:
                r.on_done(r.seen)
            except Exception:
                log.exception("command callback failed")

    def expire_requests(self) -> None:
        """Answer requests whose deadline passed without frames (a dead stream)."""
        now = time.monotonic()
        with self._lock:
            late = [r for r in self._requests if now > r.deadline]
            self._requests = [r for r in self._requests if r not in late]
        for r in late:
            try:
                r.on_done(r.seen)
            except Exception:
                log.exception("command callback failed")
