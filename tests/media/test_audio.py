"""Opus mixing with the real libopus (PyAV): each listener hears everyone but itself, clipped, bounded.

The mixer runs on a clock; tests hand it explicit times (`now=`) so they are exact and fast.
"""

import av
import numpy as np
import pytest

from asciichat_server.media.audio import FRAME_SAMPLES, SAMPLE_RATE, AudioMixer


def sine(freq: float, frames: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def opus_encode(samples: np.ndarray) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = SAMPLE_RATE
    enc.layout = "mono"
    enc.format = "flt"
    enc.bit_rate = 128_000
    out = []
    for i in range(len(samples) // FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i * FRAME_SAMPLES
        out.extend(bytes(p) for p in enc.encode(frame))
    return out


def opus_decode(packets: list[bytes]) -> np.ndarray:
    dec = av.CodecContext.create("opus", "r")  # FFmpeg's own decoder: independent of the mixer's libopus
    dec.sample_rate = SAMPLE_RATE
    dec.layout = "mono"
    chunks = [f.to_ndarray()[0] for p in packets for f in dec.decode(av.Packet(p))]
    return np.concatenate(chunks).astype(np.float64)


def band_power(signal: np.ndarray, freq: float) -> float:
    signal = signal[SAMPLE_RATE // 10 :]  # skip codec warm-up
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)
    return float(spectrum[(freqs > freq - 30) & (freqs < freq + 30)].sum())


class Clock:
    """Test time for the mixer (it reads time only through its `clock` argument)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_each_listener_hears_only_the_other() -> None:
    frames = 50  # one second
    a, b = opus_encode(sine(440, frames)), opus_encode(sine(1000, frames))
    assert len(a) == len(b) == frames
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    for listener in (1, 2, 3):
        mixer.add_listener(listener)
    heard: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
    for step in range(14):  # 100 ms steps: 5-frame batches, then a few more steps to drain the buffers
        if step * 5 < frames:
            mixer.push_opus(1, a[step * 5 : step * 5 + 5])
            mixer.push_opus(2, b[step * 5 : step * 5 + 5])
        clock.t += 0.1
        for listener in heard:
            heard[listener].extend(mixer.mix_for(listener))
    assert [len(heard[k]) for k in (1, 2, 3)] == [frames, frames, frames]
    one, two, three = (opus_decode(heard[k]) for k in (1, 2, 3))
    # Listener 1 sends 440 Hz: it must hear 1000 Hz and (practically) no 440 Hz; listener 2 the reverse.
    assert band_power(one, 1000) > 1000 * band_power(one, 440)
    assert band_power(two, 440) > 1000 * band_power(two, 1000)
    # Listener 3 sends nothing and hears both at similar strength.
    ratio = band_power(three, 440) / band_power(three, 1000)
    assert 0.5 < ratio < 2.0
    assert mixer.stats.decode_errors == 0 and mixer.stats.underruns == 2  # each stream ends once


def test_out_of_phase_senders_are_mixed_together_at_real_time_rate() -> None:
    # Both send 2-frame batches every 40 ms, source 2 always 20 ms after source 1; the listener collects
    # every 20 ms. Both voices must overlap in the mix (not alternate), and the output must keep real time.
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    mixer.add_listener(3)
    got = []
    for tick in range(100):  # 2 s
        clock.t = tick * 0.02
        if tick % 2 == 0:
            mixer.push_pcm(1, np.full(2 * FRAME_SAMPLES, 0.1, np.float32))
        else:
            mixer.push_pcm(2, np.full(2 * FRAME_SAMPLES, 0.2, np.float32))
        got += mixer.mix_pcm_for(3)
    assert 95 <= len(got) <= 100  # 2 s of audio for 2 s of time (minus the jitter buffer)
    both = sum(1 for f in got if np.allclose(f, 0.3))
    assert both >= len(got) - 5
    assert mixer.stats.underruns == 0 and mixer.stats.frames_dropped == 0


def test_pcm_mix_excludes_own_voice_exactly_and_clips() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    for listener in (1, 2, 3):
        mixer.add_listener(listener)
    x = sine(200, 5, 0.8)
    y = sine(200, 5, 0.8)  # in phase: the sum peaks at 1.6
    mixer.push_pcm(1, x)
    mixer.push_pcm(2, y)
    clock.t = 0.1
    three = np.concatenate(mixer.mix_pcm_for(3))
    one = np.concatenate(mixer.mix_pcm_for(1))
    assert np.allclose(one, y, atol=1e-6)  # listener 1 hears exactly source 2
    total = x.astype(np.float64) + y
    assert three.max() == 1.0 and three.min() == -1.0
    assert np.all(three[total > 1.0] == 1.0) and np.all(three[total < -1.0] == -1.0)
    inside = np.abs(total) <= 1.0
    assert np.allclose(three[inside], total[inside], atol=1e-6)
    # no wrap-around: the sign always follows the true sum
    assert np.all(np.sign(three[np.abs(total) > 1e-3]) == np.sign(total[np.abs(total) > 1e-3]))
    # and the Opus path keeps it within range too
    mixer.push_pcm(1, x)
    mixer.push_pcm(2, y)
    clock.t = 0.2
    decoded = opus_decode(mixer.mix_for(3))
    assert np.abs(decoded).max() <= 1.05


def test_lone_speaker_costs_nothing() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    mixer.add_listener(1)
    mixer.push_opus(1, opus_encode(sine(440, 10)))
    clock.t = 0.2
    assert mixer.mix_for(1) == []
    assert mixer.stats.frames_decoded == 0 and mixer.stats.frames_encoded == 0
    # A second listener arrives: from now on source 1 is decoded for it, and listener 1 still hears nothing.
    mixer.add_listener(2)
    mixer.push_opus(1, opus_encode(sine(440, 10)))
    clock.t = 0.4
    assert mixer.mix_for(1) == []
    assert len(mixer.mix_for(2)) == 10
    assert mixer.stats.frames_decoded == 10 and mixer.stats.frames_encoded == 10


def test_no_audio_no_work() -> None:
    mixer = AudioMixer()
    assert mixer.mix_for(7) == [] and mixer.mix_pcm_for(8) == []
    assert not mixer.has_audio()
    assert mixer.stats.rounds == 0


def test_source_queue_and_lag_are_bounded() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock, max_source_frames=24, max_lag_frames=8, prebuffer_frames=3)
    mixer.add_listener(2)
    packets = opus_encode(sine(440, 100))
    for start in range(0, 100, 10):
        mixer.push_opus(1, packets[start : start + 10])
    assert mixer.stats.frames_dropped == 76  # the queue keeps the newest 24 frames
    clock.t = 0.2  # 10 frames due; 24 buffered is more than 8 ahead: trimmed to 3 + 10 first
    assert len(mixer.mix_pcm_for(2)) == 10
    assert mixer.stats.frames_dropped == 76 + 11
    mixer.push_pcm(3, np.zeros(FRAME_SAMPLES * 100, np.float32))
    assert mixer.stats.frames_dropped == 76 + 11 + 76


def test_stalled_caller_skips_time_instead_of_bursting() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock, max_source_frames=200, max_lag_frames=200)
    mixer.add_listener(2)
    mixer.push_pcm(1, np.full(150 * FRAME_SAMPLES, 0.1, np.float32))
    clock.t = 3.0  # 150 frames due at once
    assert len(mixer.mix_pcm_for(2)) == 10


def test_lagging_listener_is_bounded() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock, max_rounds=4)
    mixer.add_listener(1)
    mixer.add_listener(2)  # never collects
    got = 0
    for step in range(20):
        clock.t = step * 0.02
        mixer.push_pcm(3, np.full(FRAME_SAMPLES, 0.1, np.float32))
        got += len(mixer.mix_pcm_for(1))
    assert got >= 15
    assert len(mixer._rounds) <= 4
    assert 1 <= len(mixer.mix_pcm_for(2)) <= 4  # skipped ahead to the newest rounds


def test_bad_opus_is_reported_not_raised() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    mixer.add_listener(2)
    good = opus_encode(sine(440, 3))
    mixer.push_opus(1, [good[0], b"\xff\xfe\xfd", good[1]])
    clock.t = 0.06
    out = mixer.mix_pcm_for(2)
    errors = mixer.pop_errors()
    assert list(errors) == [1] and "Opus decode failed" in errors[1]
    assert mixer.stats.decode_errors == 1 and mixer.stats.frames_decoded == 2
    assert len(out) == 2  # the two decoded frames; the underrun's silence is not sent
    assert mixer.pop_errors() == {}


def test_remove_forgets_source_and_listener() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    mixer.add_listener(2)
    mixer.push_pcm(1, sine(440, 4))
    mixer.remove(1)
    clock.t = 0.1
    assert mixer.mix_pcm_for(2) == []
    mixer.remove(2)
    mixer.remove(99)  # unknown ids are fine


def test_many_listeners_share_rounds() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    for i in range(32):
        mixer.add_listener(i)
    mixer.push_pcm(0, sine(440, 4, 0.2))
    mixer.push_pcm(1, sine(880, 4, 0.2))
    clock.t = 0.08
    outs = [mixer.mix_pcm_for(i) for i in range(32)]
    assert all(len(o) == 4 for o in outs)
    assert mixer.stats.rounds == 1


def test_pcm_stereo_and_other_rates_become_48k_mono() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock, max_source_frames=60, max_lag_frames=60)  # a whole second pushed at once
    mixer.add_listener(2)
    t = np.arange(16000) / 16000  # one second at 16 kHz, stereo: left 500 Hz, right silent
    left = 0.6 * np.sin(2 * np.pi * 500 * t)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1).astype(np.float32)
    mixer.push_pcm(1, stereo, sample_rate=16000, channels=2)
    frames = []
    for step in range(1, 6):
        clock.t = step * 0.2
        frames += mixer.mix_pcm_for(2)
    out = np.concatenate(frames)
    assert len(out) == 48000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(out) - 500) < 2
    assert 0.28 < np.abs(out).max() < 0.32  # averaged with the silent channel
    with pytest.raises(ValueError):
        mixer.push_pcm(1, stereo, channels=0)


def test_40ms_opus_frames_are_split_into_20ms_frames() -> None:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = SAMPLE_RATE, "mono", "flt", 64000
    enc.options = {"frame_duration": "40"}
    pcm = sine(440, 20)
    packets = []
    for i in range(10):
        frame = av.AudioFrame.from_ndarray(pcm[i * 1920 : (i + 1) * 1920].reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, i * 1920
        packets.extend(bytes(p) for p in enc.encode(frame))
    assert len(packets) == 10
    clock = Clock()
    mixer = AudioMixer(clock=clock, max_lag_frames=30)
    mixer.add_listener(2)
    mixer.push_opus(1, packets)
    clock.t = 0.2
    first = mixer.mix_pcm_for(2)
    clock.t = 0.4
    assert len(first) + len(mixer.mix_pcm_for(2)) == 20


def test_jittery_arrivals_lose_reorder_or_duplicate_nothing() -> None:
    # Three senders push 2-frame batches every 40 ms, each batch up to 30 ms late (less than the 60 ms
    # jitter buffer); listeners collect every 20 ms. Source 0's frame k holds (k+1)/1000, source 1 holds
    # 0.5 and source 2 silence, so a listener's frame shows which of source 0's frames it carries.
    rng = np.random.default_rng(11)
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    for listener in (0, 1, 2, 3):
        mixer.add_listener(listener)
    batches = 30
    events = []
    for s in range(3):
        for k in range(batches):
            events.append((0.04 * k + float(rng.uniform(0, 0.03)), 0, s, k))
    for m in range(int(0.04 * batches / 0.02) + 12):
        events.append((0.02 * m + 0.001, 1, -1, m))
    heard: dict[int, list[np.ndarray]] = {k: [] for k in (0, 1, 2, 3)}
    for when, kind, s, k in sorted(events):
        clock.t = when
        if kind == 0:
            values = [(2 * k + i + 1) / 1000 if s == 0 else (0.5 if s == 1 else 0.0) for i in range(2)]
            mixer.push_pcm(s, np.concatenate([np.full(FRAME_SAMPLES, v, np.float32) for v in values]))
        else:
            for listener in heard:
                heard[listener].extend(mixer.mix_pcm_for(listener))
    assert mixer.stats.underruns == 3 and mixer.stats.frames_dropped == 0  # one underrun per stream, at its end
    expected = [(k + 1) / 1000 for k in range(2 * batches)]
    for listener in (1, 2, 3):  # all hear source 0; listeners 2 and 3 also hear source 1's 0.5
        offset = 0.0 if listener == 1 else 0.5
        assert all(np.all(f == f[0]) for f in heard[listener])  # frames stay aligned
        carried = [round(float(f[0]) - offset, 6) for f in heard[listener] if float(f[0]) - offset > 1e-4]
        assert carried == pytest.approx(expected)  # every frame of source 0, in order, exactly once
    assert len(heard[3]) <= 2 * batches + 4  # real-time rate: no serialised (doubled) output
    assert all(float(np.abs(f - 0.5).max()) < 1e-6 for f in heard[0] if f.any())  # 0 hears source 1 only


def test_speech_after_long_silence_starts_cleanly() -> None:
    clock = Clock()
    mixer = AudioMixer(clock=clock)
    mixer.add_listener(2)
    mixer.push_pcm(1, np.full(5 * FRAME_SAMPLES, 0.1, np.float32))
    clock.t = 0.1
    assert len(mixer.mix_pcm_for(2)) == 5
    clock.t = 5.0  # nobody mixed for 4.9 s (the room stops polling when idle)
    mixer.push_pcm(1, np.full(5 * FRAME_SAMPLES, 0.2, np.float32))
    clock.t = 5.1
    out = mixer.mix_pcm_for(2)
    assert len(out) == 5 and all(np.allclose(f, 0.2) for f in out)
    assert mixer.stats.frames_dropped == 0
