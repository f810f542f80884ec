"""Render throughput of the media pipeline: N clients sending 320x240 video, each receiving 30 frames/s.

    .venv/bin/python bench/render.py            # the 1/9/32-client table (about a minute)
    .venv/bin/python bench/render.py --soak     # 5 minutes, 9 clients (video + audio), RSS start/end

Output (2-core VM, load average ~16 from other jobs, so absolute figures are pessimistic):

    clients  receiver    colour renders KB/frame   cap fps CPU us/frame core/s @30fps  target
         32    160x48 truecolor      90    116.1     12395         80.7         0.077  holds
         32  distinct truecolor    2880     68.4      1726        579.3         0.556  holds
    target (32 clients x 30 fps on one core): HOLDS in every required 32-client row

Each simulated tick every sender delivers a new frame (new seq, camera-like content with sensor noise) and
every receiver gets one frame from the Compositor, as the room does. CPU is this process's CPU time on one
thread; "holds" means the CPU needed for one second of traffic is below one core-second.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asciichat_server.media import AudioMixer, Compositor, RenderSpec, VideoSource

FPS = 30
SRC_W, SRC_H = 320, 240


def camera_frames(count: int, seed: int) -> list[np.ndarray]:
    """Smooth gradient + a moving bright disc + sensor noise: neighbouring cells rarely share a colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SRC_H, 0:SRC_W]
    base = np.stack(
        [
            (xx * 255 // SRC_W),
            (yy * 255 // SRC_H),
            np.full_like(xx, 80 + seed * 17 % 120),
        ],
        axis=-1,
    ).astype(np.int16)
    frames = []
    for i in range(count):
        img = base.copy()
        cx, cy = (40 + 8 * i) % SRC_W, SRC_H // 2
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 50**2
        img[disc] = (230, 200, 170)
        img += rng.integers(-6, 7, img.shape, dtype=np.int16)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


@dataclass
class Result:
    clients: int
    size: str
    colour: str
    ticks: int
    cpu_s: float
    unique_renders: int
    frame_bytes: int

    @property
    def delivered(self) -> int:
        return self.ticks * self.clients

    @property
    def cpu_per_frame_us(self) -> float:
        return self.cpu_s / self.delivered * 1e6

    @property
    def capacity_fps(self) -> float:
        return self.delivered / self.cpu_s

    @property
    def core_share(self) -> float:
        """Core-seconds needed per second of traffic (every client receiving FPS frames/s)."""
        return self.cpu_s / (self.ticks / FPS)


def run(clients: int, spec: RenderSpec, seconds: float, content: list[list[np.ndarray]]) -> Result:
    comp = Compositor()
    ticks = int(seconds * FPS)
    frame_bytes = 0
    gc.collect()
    start = time.process_time()
    for tick in range(ticks):
        # Every client sends a new frame each tick; the room keeps the newest per sender, the grid shows 9.
        sources = [VideoSource(c, tick, content[c % len(content)][tick % len(content[0])]) for c in range(clients)]
        shown = sources[:9]
        for _receiver in range(clients):
            frame = comp.render(shown, spec)
            frame_bytes += len(frame)
    cpu = time.process_time() - start
    label = {0: "mono", 1: "16", 2: "256", 3: "truecolor"}[spec.color_level]
    return Result(clients, f"{spec.cols}x{spec.rows}", label, ticks, cpu, comp.stats.frames_rendered, frame_bytes)


def run_mixed(clients: int, seconds: float, content: list[list[np.ndarray]]) -> Result:
    """Receivers spread over four different terminals (sizes, colour levels, render modes)."""
    specs = [
        RenderSpec(80, 24, color_level=3),
        RenderSpec(160, 48, color_level=3),
        RenderSpec(120, 40, color_level=2, render_mode=2),
        RenderSpec(80, 24, color_level=0),
    ]
    return _run_specs(clients, seconds, content, [specs[r % len(specs)] for r in range(clients)], "mixed x4", "mixed")


def run_distinct(clients: int, seconds: float, content: list[list[np.ndarray]]) -> Result:
    """Worst case: every receiver has its own terminal size, so no tile or frame is shared."""
    specs = [RenderSpec(100 + 2 * r, 30 + r // 2, color_level=3) for r in range(clients)]
    return _run_specs(clients, seconds, content, specs, "distinct", "truecolor")


def _run_specs(
    clients: int, seconds: float, content: list[list[np.ndarray]], specs: list[RenderSpec], size: str, colour: str
) -> Result:
    comp = Compositor()
    ticks = int(seconds * FPS)
    frame_bytes = 0
    gc.collect()
    start = time.process_time()
    for tick in range(ticks):
        sources = [VideoSource(c, tick, content[c % len(content)][tick % len(content[0])]) for c in range(clients)]
        for receiver in range(clients):
            frame_bytes += len(comp.render(sources[:9], specs[receiver]))
    cpu = time.process_time() - start
    return Result(clients, size, colour, ticks, cpu, comp.stats.frames_rendered, frame_bytes)


def run_staggered(clients: int, spec: RenderSpec, seconds: float, content: list[list[np.ndarray]]) -> Result:
    """Receivers paced independently: senders' frames land between receivers, so every receiver sees a
    different set of seqs and the frame cache never hits; only the tile cache (one render per new frame) helps."""
    comp = Compositor()
    ticks = int(seconds * FPS)
    shown = min(clients, 9)
    frame_bytes = 0
    seqs = [0] * shown
    gc.collect()
    start = time.process_time()
    for tick in range(ticks):
        for receiver in range(clients):
            for j in range(shown):
                if receiver == (j * clients) // shown:
                    seqs[j] = tick + 1  # sender j's new frame arrives just before this receiver's turn
            sources = [VideoSource(j, seqs[j], content[j][seqs[j] % len(content[0])]) for j in range(shown)]
            frame_bytes += len(comp.render(sources, spec))
    cpu = time.process_time() - start
    return Result(clients, f"{spec.cols}x{spec.rows}", "stagger", ticks, cpu, comp.stats.frames_rendered, frame_bytes)


def table(seconds: float) -> int:
    smoke = seconds < 0.5  # a quick check that the script works, not a measurement
    content = [camera_frames(4 if smoke else 30, seed) for seed in range(9)]
    results = []
    for clients in (1, 9, 32):
        for cols, rows in ((80, 24), (160, 48)):
            for level in (3, 0):
                results.append(run(clients, RenderSpec(cols, rows, color_level=level), seconds, content))
    extras = []
    for clients in (9, 32):
        extras.append(run_mixed(clients, seconds, content))
        extras.append(run_distinct(clients, seconds, content))
        for cols, rows in ((80, 24), (160, 48)):
            extras.append(run_staggered(clients, RenderSpec(cols, rows, color_level=3), seconds, content))
    version = sys.version.split()[0]
    print(f"media render bench: {SRC_W}x{SRC_H} sources, {FPS} fps per receiver, one thread, python {version}")
    print("receivers share one terminal spec and one render tick (the room's pacing); extra rows below vary that")
    header = (
        f"{'clients':>7} {'receiver':>9} {'colour':>9} {'renders':>7} {'KB/frame':>8} "
        f"{'cap fps':>9} {'CPU us/frame':>12} {'core/s @30fps':>13}  target"
    )
    ok = True
    for group, rows_ in (("required", results), ("extra", extras)):
        print(f"-- {group}")
        print(header)
        for r in rows_:
            holds = r.core_share < 1.0
            if group == "required" and r.clients == 32:
                ok &= holds
            kb = r.frame_bytes / r.delivered / 1024
            print(
                f"{r.clients:>7} {r.size:>9} {r.colour:>9} {r.unique_renders:>7} {kb:>8.1f} "
                f"{r.capacity_fps:>9.0f} {r.cpu_per_frame_us:>12.1f} {r.core_share:>13.3f}  "
                f"{'holds' if holds else 'MISSES'}"
            )
    print(f"target (32 clients x {FPS} fps on one core): {'HOLDS' if ok else 'MISSED'} in every required 32-client row")
    print(h265_figures(8 if smoke else 60))
    for talkers in (9, 32):
        print(audio_figures(talkers, 0.2 if smoke else 2.0))
    return 0 if ok else 1


def h265_figures(frames: int = 60) -> str:
    """Decode cost of a 480x270 HEVC stream (the native HEAD client's size) with PyAV, to RGB."""
    import fractions

    import av

    from asciichat_server.media import H265Decoder

    if "libx265" not in av.codecs_available:
        return "h265: libx265 encoder missing from PyAV's FFmpeg, decode cost not measured"
    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = 480, 270, "yuv420p"
    enc.time_base, enc.framerate = fractions.Fraction(1, 30), 30
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "log-level=none:keyint=30"}
    content = camera_frames(min(frames, 30), 3)
    packets = []
    for i in range(frames):
        img = np.ascontiguousarray(np.resize(content[i % len(content)], (270, 480, 3)))
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets.extend(bytes(p) for p in enc.encode(frame))
    dec = H265Decoder()
    start = time.process_time()
    decoded = sum(dec.decode(p) is not None for p in packets)
    cpu = time.process_time() - start
    return (
        f"h265: {decoded} frames 480x270 decoded to RGB, {cpu / decoded * 1e3:.2f} ms CPU each "
        f"(32 senders at 30 fps would need {cpu / decoded * 32 * 30:.2f} core-s/s, one thread per decoder)"
    )


def audio_figures(talkers: int, seconds: float = 2.0) -> str:
    """Every client talking (Opus in), every client listening (Opus out), mixed every 40 ms."""
    import av

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "flt", 64000
    t = np.arange(48000) / 48000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    packets = []
    for i in range(50):
        f = av.AudioFrame.from_ndarray(pcm[i * 960 : (i + 1) * 960].reshape(1, -1), format="flt", layout="mono")
        f.sample_rate, f.pts = 48000, i * 960
        packets.extend(bytes(p) for p in enc.encode(f))
    sim_time = [0.0]  # simulated time: the mixer runs as fast as the CPU allows, 40 ms per step
    mixer = AudioMixer(clock=lambda: sim_time[0])
    for c in range(talkers):
        mixer.add_listener(c)
    steps = int(seconds / 0.04)
    start = time.process_time()
    for step in range(steps):
        for c in range(talkers):
            mixer.push_opus(c, packets[(2 * step) % 48 : (2 * step) % 48 + 2])
        sim_time[0] += 0.04
        for c in range(talkers):
            mixer.mix_for(c)
    cpu = time.process_time() - start
    return (
        f"audio: {talkers} talking + listening, {cpu / seconds:.3f} core-s per second of audio "
        f"({mixer.stats.frames_decoded} decoded, {mixer.stats.frames_encoded} encoded frames)"
    )


def rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 1e6


def soak(seconds: float) -> int:
    """9 clients in real time: video at 30 fps to mixed receivers, Opus audio every 40 ms."""
    import av

    content = [camera_frames(30 if seconds >= 10 else 4, seed) for seed in range(9)]
    specs = [
        RenderSpec(80, 24, color_level=3),
        RenderSpec(160, 48, color_level=3),
        RenderSpec(120, 40, color_level=2, render_mode=2),
        RenderSpec(80, 24, color_level=0),
        RenderSpec(100, 30, color_level=1, render_mode=1),
    ]
    # Pre-encode one second of a tone per client with libopus; replayed in a loop.
    packets = []
    for c in range(9):
        enc = av.CodecContext.create("libopus", "w")
        enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "mono", "flt", 64000
        t = np.arange(48000) / 48000
        pcm = (0.3 * np.sin(2 * np.pi * (300 + 50 * c) * t)).astype(np.float32)
        out = []
        for i in range(50):
            f = av.AudioFrame.from_ndarray(pcm[i * 960 : (i + 1) * 960].reshape(1, -1), format="flt", layout="mono")
            f.sample_rate, f.pts = 48000, i * 960
            out.extend(bytes(p) for p in enc.encode(f))
        packets.append(out)
    comp = Compositor()
    mixer = AudioMixer()
    for c in range(9):
        mixer.add_listener(c)
    rss_start = rss_mb()
    print(f"soak: 9 clients, {seconds:.0f} s, RSS at start {rss_start:.1f} MB", flush=True)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    tick = 0
    rss_warm = None
    delivered = 0
    audio_frames = 0
    audio_sent = 0
    while (now := time.monotonic() - t0) < seconds:
        sources = [VideoSource(c, tick, content[c][tick % len(content[c])]) for c in range(9)]
        for receiver in range(9):
            delivered += bool(comp.render(sources, specs[receiver % len(specs)]))
        # Audio in real time: every client sends the 20 ms frames its clock has produced, in batches of
        # 2 or more (the C client batches up to 40 ms), and every listener collects its mix.
        due = int(now / 0.02) - audio_sent
        if due >= 2:
            for c in range(9):
                mixer.push_opus(c, [packets[c][(audio_sent + i) % 50] for i in range(due)])
            audio_sent += due
        for c in range(9):
            audio_frames += len(mixer.mix_for(c))
        tick += 1
        if rss_warm is None and now >= min(10.0, seconds / 3):
            rss_warm = rss_mb()
            print(f"  RSS after warm-up ({now:.0f} s): {rss_warm:.1f} MB", flush=True)
        sleep = (tick / FPS) - (time.monotonic() - t0)
        if sleep > 0:
            time.sleep(sleep)
    cpu = time.process_time() - cpu0
    rss_end = rss_mb()
    reference = rss_warm if rss_warm is not None else rss_start
    change = (rss_end - reference) / reference * 100
    elapsed = time.monotonic() - t0
    print(
        f"  delivered {delivered} video frames ({tick / elapsed:.1f} ticks/s of {FPS}), {audio_frames} audio frames, "
        f"CPU {cpu:.1f} s ({cpu / elapsed * 100:.0f}% of one core), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  caches: {comp.cache_sizes()}")
    print(
        f"RSS start {rss_start:.1f} MB, after warm-up {reference:.1f} MB, end {rss_end:.1f} MB: {change:+.1f}% ", end=""
    )
    flat = abs(change) <= 10
    print("(flat within 10%)" if flat else "(NOT flat)")
    return 0 if flat else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="simulated traffic per table row (default 2)")
    parser.add_argument("--soak", action="store_true", help="5-minute 9-client real-time run with RSS check")
    parser.add_argument("--soak-seconds", type=float, default=300.0)
    args = parser.parse_args()
    if args.soak:
        return soak(args.soak_seconds)
    return table(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
