"""Per-listener audio mixing: Opus (48 kHz mono, 20 ms) in, the sum of everyone else's voice out (ACIP.md 5.4).

Clock-driven like the C mixer: every call takes the 20 ms frames that real time says are due from every
source that is playing, so senders whose batches arrive out of phase are still mixed together and the output
runs at exactly real-time rate. Each source has a small jitter buffer (it starts playing once 60 ms are queued
or its first audio has waited that long; an underrun pads with silence and re-buffers; a backlog beyond
~160 ms is trimmed from the oldest end). A round of due frames is shared by all listeners; each receives
round_total - own_voice, clipped to [-1, 1] so loud overlaps saturate instead of wrapping round. A listener
with nobody else to hear gets nothing and costs no encode; a source nobody else hears is never decoded.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import av
import numpy as np

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
BITRATE = 128_000  # what the C client and server use (ACIP.md 5.4.1)
# 24 frames = 480 ms per source: three full 8-frame client batches of jitter before the oldest audio goes.
MAX_SOURCE_FRAMES = 24
# A listener that stops collecting holds at most this many rounds before it skips ahead.
MAX_ROUNDS = 32
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PREBUFFER_FRAMES = 3  # 60 ms of jitter buffer: the C client sends a batch at least every 40 ms
MAX_LAG_FRAMES = 8  # a playing source more than 160 ms ahead of the clock is trimmed (clock drift, bursts)
MAX_DUE_FRAMES = 10  # after a stall of the caller, at most 200 ms are mixed at once; older time is skipped
IDLE_RESET_S = 1.0  # no audio anywhere for this long: the clock restarts with the next audio


@dataclass
class AudioStats:
    frames_decoded: int = 0
    frames_encoded: int = 0
    frames_dropped: int = 0  # overflowed source queues or undecoded audio nobody else hears
    decode_errors: int = 0
    rounds: int = 0
    underruns: int = 0


class _Source:
    __slots__ = ("decoder", "packets", "pending_since", "playing", "samples")

    def __init__(self) -> None:
        self.decoder: av.CodecContext | None = None
        self.packets: deque[bytes] = deque()
        self.samples = np.zeros(0, dtype=np.float32)
        self.playing = False
        self.pending_since: float | None = None  # when audio arrived while not playing (jitter buffer)

    def note_arrival(self, now: float) -> None:
        if not self.playing and self.pending_since is None:
            self.pending_since = now


class _Listener:
    __slots__ = ("cursor", "encoder", "pts")

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.encoder: av.CodecContext | None = None
        self.pts = 0


def _new_decoder() -> av.CodecContext:
    ctx = av.CodecContext.create("libopus", "r")
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.options = {"request_sample_fmt": "flt"}
    return ctx


def _new_encoder(bitrate: int, complexity: int) -> av.CodecContext:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = SAMPLE_RATE
    ctx.layout = "mono"
    ctx.format = "flt"
    ctx.bit_rate = bitrate
    ctx.options = {"application": "audio", "frame_duration": "20", "compression_level": str(complexity)}
    return ctx


def _frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """Mono float32 samples from a decoded frame (libopus gives flt when asked, s16 otherwise)."""
    data = frame.to_ndarray()
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    channels = len(frame.layout.channels)
    if data.shape[0] == 1 and channels > 1:  # packed: interleaved channels in one row
        data = data.reshape(-1, channels).T
    return data.mean(axis=0, dtype=np.float32) if data.shape[0] > 1 else data[0].astype(np.float32)


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Serialise public calls so the room may mix on a worker thread while the loop pushes audio."""

    @functools.wraps(method)
    def wrapper(self: AudioMixer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class AudioMixer:
    """Mixes every source's audio for each listener, excluding the listener's own voice."""

    def __init__(
        self,
        max_source_frames: int = MAX_SOURCE_FRAMES,
        max_rounds: int = MAX_ROUNDS,
        bitrate: int = BITRATE,
        complexity: int = 5,
        prebuffer_frames: int = PREBUFFER_FRAMES,
        max_lag_frames: int = MAX_LAG_FRAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_source_samples = max_source_frames * FRAME_SAMPLES
        self.max_source_frames = max_source_frames
        self.max_rounds = max_rounds
        self.prebuffer_frames = prebuffer_frames
        self.max_lag_frames = max_lag_frames
        self.clock = clock
        self.bitrate = bitrate
        # libopus complexity 5 encodes a 20 ms frame in ~0.12 ms here against ~0.22 ms at 10;
        # with 32 listeners at 50 frames/s that is the difference between 0.2 and 0.35 of a core.
        self.complexity = complexity
        self.stats = AudioStats()
        self._sources: dict[int, _Source] = {}
        self._listeners: dict[int, _Listener] = {}
        # Each round: (sum of all sources as float64, {source_id: that source's samples}).
        self._rounds: deque[tuple[np.ndarray, dict[int, np.ndarray]]] = deque()
        self._round_base = 0  # absolute index of self._rounds[0]
        self._errors: dict[int, str] = {}
        self._lock = threading.RLock()
        self._epoch: float | None = None  # clock time of frame 0 of the current active period
        self._frames_done = 0  # frames of clock time already mixed (or skipped) since the epoch
        self._last_audio = 0.0

    # -- input -----------------------------------------------------------------------------------------------

    @_locked
    def push_opus(self, source_id: int, frames: list[bytes], now: float | None = None) -> None:
        """Queue one AUDIO_OPUS_BATCH's frames; decoding waits until someone else is listening."""
        src = self._sources.setdefault(source_id, _Source())
        if frames:
            self._arrival(src, self.clock() if now is None else now)
        for packet in frames:
            if packet:
                src.packets.append(bytes(packet))
        while len(src.packets) > self.max_source_frames:
            src.packets.popleft()
            self.stats.frames_dropped += 1

    def push_pcm(
        self,
        source_id: int,
        pcm: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 1,
        now: float | None = None,
    ) -> None:
        """Queue raw float samples (AUDIO_BATCH), nominally within [-1, 1].

        Interleaved multi-channel input is averaged to mono; other rates are resampled to 48 kHz linearly
        (AUDIO_BATCH is a fallback path, so simple interpolation is enough).
        """
        if channels < 1 or sample_rate < 1:
            raise ValueError(f"bad audio format: {channels} channels at {sample_rate} Hz")
        samples = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if channels > 1:
            samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
        if sample_rate != SAMPLE_RATE and len(samples):
            count = round(len(samples) * SAMPLE_RATE / sample_rate)
            positions = np.arange(count) * (sample_rate / SAMPLE_RATE)
            samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
        with self._lock:
            src = self._sources.setdefault(source_id, _Source())
            if len(samples):
                self._arrival(src, self.clock() if now is None else now)
            self._append_samples(src, samples)

    @_locked
    def add_listener(self, listener_id: int) -> None:
        """Start a listener now (it hears audio queued from now on); mix_for() does this on first call."""
        if listener_id not in self._listeners:
            self._listeners[listener_id] = _Listener(self._round_base + len(self._rounds))

    @_locked
    def remove(self, client_id: int) -> None:
        """Forget a client both as a source and as a listener."""
        self._sources.pop(client_id, None)
        self._listeners.pop(client_id, None)
        self._trim()

    @_locked
    def pop_errors(self) -> dict[int, str]:
        """Decode failures since the last call, by source id (one-line reasons for ERROR_MESSAGE/logging)."""
        errors, self._errors = self._errors, {}
        return errors

    @_locked
    def has_audio(self) -> bool:
        return any(s.packets or len(s.samples) for s in self._sources.values())

    # -- output ----------------------------------------------------------------------------------------------

    @_locked
    def mix_pcm_for(self, listener_id: int, now: float | None = None) -> list[np.ndarray]:
        """The listener's mix due by `now` as 960-sample float32 frames in [-1, 1] (no own voice)."""
        self.add_listener(listener_id)
        listener = self._listeners[listener_id]
        end = self._round_base + len(self._rounds)
        if listener.cursor >= end:
            self._form_round(self.clock() if now is None else now)
            end = self._round_base + len(self._rounds)
        out: list[np.ndarray] = []
        for index in range(max(listener.cursor, self._round_base), end):
            total, parts = self._rounds[index - self._round_base]
            own = parts.get(listener_id)
            if own is None:
                mix = total
            elif len(parts) == 1:
                continue  # only the listener spoke in this round: nothing to send
            else:
                mix = total - own
            clipped = np.clip(mix, -1.0, 1.0).astype(np.float32)
            out.extend(clipped.reshape(-1, FRAME_SAMPLES))
        listener.cursor = end
        self._trim()
        return out

    @_locked
    def mix_for(self, listener_id: int, now: float | None = None) -> list[bytes]:
        """The listener's mix due by `now` as Opus packets (one per 20 ms frame) for AUDIO_OPUS_BATCH.

        Call it for every listener every 20-40 ms (each call returns what real time made due since the
        previous round, usually 1-2 frames); [] means there is nothing to send.
        """
        frames = self.mix_pcm_for(listener_id, now)
        if not frames:
            return []
        listener = self._listeners[listener_id]
        if listener.encoder is None:
            listener.encoder = _new_encoder(self.bitrate, self.complexity)
        packets: list[bytes] = []
        for samples in frames:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = listener.pts
            listener.pts += FRAME_SAMPLES
            packets.extend(bytes(p) for p in listener.encoder.encode(frame))
            self.stats.frames_encoded += 1
        return packets

    # -- internals -------------------------------------------------------------------------------------------

    def _arrival(self, src: _Source, now: float) -> None:
        # First audio after a silence (even one nobody mixed during): the mix clock starts here, so the
        # silent time is neither mixed nor counted as due.
        idle = self._epoch is None or now - self._last_audio >= IDLE_RESET_S
        src.note_arrival(now)
        self._last_audio = now
        if idle:
            self._epoch = now
            self._frames_done = 0

    def _append_samples(self, src: _Source, samples: np.ndarray) -> None:
        buf = np.concatenate((src.samples, samples)) if len(src.samples) else samples
        excess = len(buf) - self.max_source_samples
        if excess > 0:
            # Drop whole frames from the front so the stream stays frame-aligned.
            drop = -(-excess // FRAME_SAMPLES) * FRAME_SAMPLES
            buf = buf[drop:]
            self.stats.frames_dropped += drop // FRAME_SAMPLES
        src.samples = buf

    def _decode_pending(self, source_id: int, src: _Source) -> None:
        if not src.packets:
            return
        if not any(lid != source_id for lid in self._listeners):
            # Nobody else can hear this source: discard without paying for a decode.
            self.stats.frames_dropped += len(src.packets)
            src.packets.clear()
            src.samples = np.zeros(0, dtype=np.float32)
            src.playing = False
            src.pending_since = None
            return
        if src.decoder is None:
            src.decoder = _new_decoder()
        decoded = []
        while src.packets:
            packet = src.packets.popleft()
            try:
                frames = src.decoder.decode(av.Packet(packet))
            except av.error.FFmpegError as err:
                # One bad packet is skipped (Opus conceals the gap); the room decides what to tell the peer.
                self.stats.decode_errors += 1
                self._errors[source_id] = f"Opus decode failed: {err.strerror or err}"
                continue
            for frame in frames:
                decoded.append(_frame_to_float(frame))
                self.stats.frames_decoded += 1
        if decoded:
            self._append_samples(src, np.concatenate(decoded))

    def _form_round(self, now: float) -> None:
        active = any(src.packets or len(src.samples) or src.playing for src in self._sources.values())
        if not active and now - self._last_audio >= IDLE_RESET_S:
            self._epoch = None  # idle: the next audio restarts the clock (and costs nothing until then)
            return
        if self._epoch is None:
            if not active:
                return
            self._epoch = now
            self._frames_done = 0
        due = int((now - self._epoch) / FRAME_S + 1e-6) - self._frames_done  # 1e-6: 0.1 / 0.02 is 4.999...
        if due <= 0:
            return
        if due > MAX_DUE_FRAMES:  # the caller stalled: skip the time rather than mix a burst
            self._frames_done += due - MAX_DUE_FRAMES
            due = MAX_DUE_FRAMES
        self._frames_done += due
        n = due * FRAME_SAMPLES
        parts: dict[int, np.ndarray] = {}
        longest = 0
        prebuffer = self.prebuffer_frames * FRAME_SAMPLES
        for source_id, src in self._sources.items():
            self._decode_pending(source_id, src)
            if not src.playing:
                waited = src.pending_since is not None and now - src.pending_since >= self.prebuffer_frames * FRAME_S
                if len(src.samples) >= prebuffer or (waited and len(src.samples)):
                    src.playing = True
                    src.pending_since = None
                else:
                    continue
            excess = len(src.samples) - (self.max_lag_frames + due) * FRAME_SAMPLES
            if excess > 0:  # too far ahead of the clock: drop the oldest, keep a normal buffer
                drop = len(src.samples) - (self.prebuffer_frames + due) * FRAME_SAMPLES
                src.samples = src.samples[drop:]
                self.stats.frames_dropped += drop // FRAME_SAMPLES
            take = min(len(src.samples), n)
            if take == n:
                chunk = src.samples[:n]
            else:  # underrun: what there is, then silence; the source re-buffers before playing again
                chunk = np.zeros(n, dtype=np.float32)
                chunk[:take] = src.samples[:take]
                src.playing = False
                self.stats.underruns += 1
            src.samples = src.samples[take:]
            if take:
                parts[source_id] = chunk
                longest = max(longest, take)
        if parts:
            # When every voice ran dry inside this round, send only the frames that carry audio.
            n = -(-longest // FRAME_SAMPLES) * FRAME_SAMPLES
            parts = {sid: chunk[:n] for sid, chunk in parts.items()}
            total = np.zeros(n, dtype=np.float64)
            for chunk in parts.values():
                total += chunk
            self._rounds.append((total, parts))
            self.stats.rounds += 1

    def _trim(self) -> None:
        if not self._rounds:
            return
        end = self._round_base + len(self._rounds)
        oldest_needed = min((lst.cursor for lst in self._listeners.values()), default=end)
        oldest_needed = max(oldest_needed, end - self.max_rounds)
        while self._rounds and self._round_base < oldest_needed:
            self._rounds.popleft()
            self._round_base += 1
