"""The audio runtime, heard through a JACK client of our own.

The capture client runs in its own process (tests/jack_audio_capture.py):
its process callback is Python and would otherwise wait for this process's
GIL, which some tests hold on purpose. On the dummy driver a stalled client
delays the whole graph, so a stall shows as JACK xruns and late capture
cycles rather than as a gap in the audio; the tests count those.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from compiler_bridge.compile import compile_project
from compiler_bridge.errors import RuntimeInitError
from compiler_bridge.program import Program
from compiler_bridge.settings import AUDIO
from runtimes.audio.engine import NAN_RUN_LIMIT

from helpers import ON_PIPEWIRE, CaptureProcess, clear_of, hold_gil_and_collect, our_ports, wait_for, write_audio_project

SINE_GAIN = 0.2  # examples/sine's gain
SETTLE_S = 0.3  # lets JACK finish re-sorting its graph after a client or connection change


# --- helpers ------------------------------------------------------------------------


def frequency_hz(x: np.ndarray, sample_rate: float) -> float:
    """Frequency of a sine from its interpolated upward zero crossings."""
    up = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    crossings = up + x[up] / (x[up] - x[up + 1])
    return (len(crossings) - 1) * sample_rate / (crossings[-1] - crossings[0])


def swap_region(x: np.ndarray, sample_rate: float, before_hz: float, after_hz: float, half_frames: int) -> np.ndarray:
    """The samples around where a sine changes from *before_hz* to *after_hz*.

    Found from the zero crossings: the first period closer to the new
    frequency's than to the old one's marks the swap.
    """
    up = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    threshold = sample_rate / ((before_hz + after_hz) / 2)
    periods = np.diff(up)
    changed = np.nonzero(periods < threshold if after_hz > before_hz else periods > threshold)[0]
    assert len(changed), "no frequency change found"
    center = int(up[changed[0]])
    return x[max(0, center - half_frames):center + half_frames]


def max_step(amplitude: float, freq_hz: float, sample_rate: float, crossfade_frames: int) -> float:
    """Largest sample-to-sample change a crossfade of sines up to *freq_hz* can make.

    A sine moves at most ``amplitude * 2 pi f / sample_rate`` per sample; a
    linear equal-gain crossfade adds at most ``2 * amplitude / crossfade_frames``.
    """
    bound = amplitude * 2 * math.pi * freq_hz / sample_rate + 2 * amplitude / max(crossfade_frames, 1)
    return bound * 1.05 + 1e-6


def audio_settings(**values) -> dict:
    return AUDIO.resolve(values)


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def sine_programs(tmp_path_factory) -> dict[float, Program]:
    """examples/sine compiled as shipped (440 Hz) and after an edit to 660 Hz."""
    import shutil

    project = tmp_path_factory.mktemp("audio") / "sine"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "sine", project,
                    ignore=shutil.ignore_patterns(".livehost", "__pycache__"))
    programs = {440.0: Program.from_compiled(compile_project(project))}
    patch = project / "patch.py"
    patch.write_text(patch.read_text().replace("freq_hz = 440.0", "freq_hz = 660.0"))
    programs[660.0] = Program.from_compiled(compile_project(project))
    return programs


LOOP_PATCH = '''
class State:
    gain = 0.5


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[i, c] = s.gain * inp[i, 0]
'''

@pytest.fixture(scope="session")
def loop_program(tmp_path_factory) -> Program:
    """Plays its first input channel at half gain (channels_in = 1)."""
    root = tmp_path_factory.mktemp("loop")
    return Program.from_compiled(compile_project(
        write_audio_project(root, "loop", "channels_in = 1\nchannels_out = 1\n", LOOP_PATCH)))


@pytest.fixture
def capture(tmp_path, request):
    """``capture(channels)`` -> a running CaptureProcess, closed after the test."""
    made: list[CaptureProcess] = []

    def make(channels: int = 1) -> CaptureProcess:
        made.append(CaptureProcess(channels, tmp_path))
        return made[-1]

    yield make
    for cap in made:
        cap.close()


def _listen(runtime_ports: list[str], cap: CaptureProcess) -> None:
    for src, dst in zip(runtime_ports, cap.info["inputs"]):
        cap.connect(src, dst)
    time.sleep(SETTLE_S)


# --- through PortAudio and JACK --------------------------------------------------------


@pytest.mark.jack
def test_plays_440_then_660_after_recompile_without_click(sine_programs, capture):
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    sr = cap.info["sample_rate"]
    xruns = []
    for _ in range(5):  # a take the graph xrunned in (a client late, the capture's own Python callback
        with AudioRuntime(audio_settings()) as rt:  # now and then) lost frames through no fault of ours
            rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
            _listen(our_ports(cap, "out"), cap)
            cap.start()
            time.sleep(0.6)
            rt.load(sine_programs[660.0])
            time.sleep(0.6)
            x, report = cap.stop()
            program, state = rt.snapshot()
            stats = rt.stats()
        xruns.append(report["xruns"])
        if not report["xruns"]:
            break
    print(f"\ngraph xruns per take: {xruns}")
    assert xruns[-1] == 0, f"the graph xrunned in every take: {xruns}"
    quarter = sr // 4
    assert abs(frequency_hz(x[:quarter], sr) - 440.0) < 0.5
    assert abs(frequency_hz(x[-quarter:], sr) - 660.0) < 0.5
    crossfade_frames = round(AUDIO.defaults["crossfade_ms"] * sr / 1000)
    region = swap_region(x, sr, 440.0, 660.0, 4 * crossfade_frames)
    assert np.abs(np.diff(region)).max() <= max_step(SINE_GAIN, 660.0, sr, crossfade_frames)
    assert program is sine_programs[660.0]
    assert state["freq_hz"][0] == 660.0 and state["gain"][0] == SINE_GAIN  # new default, carried gain
    assert stats["swaps"] == 1 and stats["block_frames"] == cap.info["block_frames"]
    assert stats["sample_rate"] == sr
    assert stats["nan_blocks"] == 0 and stats["clipped_samples"] == 0 and stats["kernel_errors"] == 0
    assert stats["callback_p50_us"] <= stats["callback_p99_us"] <= stats["callback_max_us"] + 1
    assert 0.0 < stats["load"] < 1.0 and stats["frames"] >= stats["blocks"] * 64


@pytest.mark.jack
def test_fade_out_goes_silent_with_a_final_state_and_the_stream_stays_until_close(sine_programs, capture):
    # a switch to another runtime starts it between fade_out() and close(): the old one must be
    # silent by then, its state final, its ports still there until close()
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    rt = AudioRuntime(audio_settings())
    try:
        rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
        _listen(our_ports(cap, "out"), cap)
        cap.start()
        time.sleep(0.3)
        assert rt.fade_out() and not rt.fade_out()  # once
        first = rt.snapshot()[1].copy()
        time.sleep(0.2)
        x, report = cap.stop()
        assert our_ports(cap, "out")  # still open
        second = rt.snapshot()[1]
    finally:
        rt.close()
    assert not our_ports(cap, "out")
    assert first.tobytes() == second.tobytes()  # the kernel no longer runs
    sr = cap.info["sample_rate"]
    print(f"\ngraph xruns in the take: {report['xruns']}")
    assert np.abs(x[: sr // 5]).max() > 0.9 * SINE_GAIN  # it played ...
    assert np.abs(x[-sr // 10:]).max() == 0.0  # ... and then nothing at all


@pytest.mark.jack
def test_block_frames_setting_is_honoured(sine_programs, capture):
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    xruns = []
    with AudioRuntime(audio_settings(block_frames=64)) as rt:
        rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
        _listen(our_ports(cap, "out"), cap)
        for _ in range(5):  # a take the graph xrunned in lost frames through no fault of ours: again
            cap.start()
            time.sleep(0.4)
            x, report = cap.stop()
            xruns.append(report["xruns"])
            if not report["xruns"]:
                break
        assert rt.stats()["block_frames"] == 64
    print(f"\ngraph xruns per take: {xruns}")
    assert xruns[-1] == 0, f"the graph xrunned in every take: {xruns}"
    assert abs(frequency_hz(x, cap.info["sample_rate"]) - 440.0) < 0.5


ATTEMPTS = 5  # every attempt counts; the distribution is printed


def attempts(n: int, measure) -> list[dict]:
    """Run *measure* *n* times and return every report (none is discarded)."""
    reports = []
    for _ in range(n):
        reports.append(measure())
        print(reports[-1])
    return reports


def skip_if_graph_busy(cap: CaptureProcess, rt) -> None:
    """Skip (outside CI) when the JACK graph already xruns with nothing provoking it.

    Measured in the same run: one idle second. Other processes saturating a
    shared machine delay the non-realtime dummy server by tens of ms; then no
    stall count means anything. Under ``CI=true`` the test runs regardless.
    """
    xruns_before = rt.stats()["xruns"]
    cap.start()
    time.sleep(1.0)
    _, idle = cap.stop()
    idle["runtime_xruns"] = rt.stats()["xruns"] - xruns_before
    if not _clean(idle) and os.environ.get("CI") != "true":
        pytest.skip(f"the JACK graph xruns while idle (machine overloaded): {idle}")


def _clean(report: dict) -> bool:
    return report["xruns"] == 0 and report["late_cycles"] == 0 and report.get("runtime_xruns", 0) == 0


def _distribution(reports: list[dict], key: str) -> dict[int, int]:
    """How many attempts saw 0, 1, 2 ... of *key*."""
    counts: dict[int, int] = {}
    for r in reports:
        counts[r[key]] = counts.get(r[key], 0) + 1
    return dict(sorted(counts.items()))


def c_client_under_stress(cap: CaptureProcess, n: int) -> list[dict]:
    """The control: a plain C JACK client (jack_simple_client) plays while this
    process runs the same GIL stress, which cannot reach it: what the graph
    shows then is the machine's own noise."""
    import shutil

    if shutil.which("jack_simple_client") is None:
        pytest.fail("jack_simple_client (Debian package jackd2) is needed for the control")
    client = subprocess.Popen(["jack_simple_client", f"lh-control-{os.getpid()}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: cap.ports(f"^lh-control-{os.getpid()}:") != [], 10)
        time.sleep(SETTLE_S)

        def measure() -> dict:
            cap.start()
            hold_gil_and_collect()
            time.sleep(0.1)
            return cap.stop()[1]

        return attempts(n, measure)
    finally:
        client.terminate()
        client.wait()


@pytest.mark.jack
def test_gil_held_500ms_and_full_gc_cause_no_xrun_unlike_a_python_callback(sine_programs, capture):
    """livehost keeps time while the host holds the GIL; a Python callback does not.

    Every attempt counts. Beside it, in the same run and under the same
    stress, a plain C JACK client shows what the machine's own noise is; and
    the negative control proves the test can fail: a plain sounddevice
    callback, and JACK reports xruns and a stalled graph.
    """
    import sounddevice as sd

    from runtimes.audio import AudioRuntime

    cap = capture(1)
    sr = cap.info["sample_rate"]
    with AudioRuntime(audio_settings()) as rt:
        rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
        _listen(our_ports(cap, "out"), cap)
        skip_if_graph_busy(cap, rt)

        def measure() -> dict:
            xruns_before = rt.stats()["xruns"]
            cap.start()
            hold_gil_and_collect()
            time.sleep(0.1)
            x, report = cap.stop()
            return {**report, "runtime_xruns": rt.stats()["xruns"] - xruns_before,
                    "freq_hz": round(frequency_hz(x, sr), 3)}

        ours = attempts(ATTEMPTS, measure)
        device = rt.config.output_device  # (the server's playback: PortAudio's default may be any client)

    control = c_client_under_stress(cap, ATTEMPTS)

    phase = [0.0]

    def python_callback(outdata, frames, time_info, status):
        t = phase[0] + np.arange(frames) * (2 * np.pi * 440.0 / sr)
        outdata[:, 0] = SINE_GAIN * np.sin(t)
        phase[0] = float(t[-1] + 2 * np.pi * 440.0 / sr)

    with sd.OutputStream(device=device, samplerate=sr, channels=1, dtype="float32", callback=python_callback):
        _listen(our_ports(cap, "out"), cap)
        cap.start()
        hold_gil_and_collect()
        time.sleep(0.1)
        _, python = cap.stop()
    print("livehost under GIL stress, attempts by xruns:", _distribution(ours, "xruns"),
          "by late cycles:", _distribution(ours, "late_cycles"),
          "by livehost's own xruns:", _distribution(ours, "runtime_xruns"))
    print("plain C client under the same stress, attempts by xruns:", _distribution(control, "xruns"),
          "by late cycles:", _distribution(control, "late_cycles"))
    print("plain sounddevice callback under GIL stress:", python)

    assert all(abs(r["freq_hz"] - 440.0) < 0.5 for r in ours), ours
    # A callback that waited for the GIL stalls the graph for the hold (500 ms): the capture's longest
    # gap between cycles says so in every attempt. A late wake-up of the non-real-time server is a
    # gap of a few periods (11-23 ms in a CI run where two attempts here had xruns and the C
    # client's none), so the xrun counts get two attempts' worth of noise beside the C client's.
    assert all(r["max_gap_ms"] < 100.0 for r in ours), ours
    assert sum(r["xruns"] > 0 for r in ours) <= sum(r["xruns"] > 0 for r in control) + 2, (ours, control)
    # the test can fail (PipeWire tells its JACK clients of no xrun for a stalled graph: seen there,
    # 0 xruns beside the same 500 ms gap)
    assert (python["xruns"] >= 10 or ON_PIPEWIRE) and python["late_cycles"] > 0, python
    assert python["max_gap_ms"] >= 400.0, python  # ... and the gap tells a GIL wait apart


@pytest.mark.jack
def test_thousand_swaps_give_no_xrun_and_no_click(sine_programs, capture):
    """1000 hot swaps between two precompiled programs: every one crossfaded, none audible as a click."""
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    sr = cap.info["sample_rate"]
    a, b = sine_programs[440.0], sine_programs[660.0]
    crossfade_frames = round(AUDIO.defaults["crossfade_ms"] * sr / 1000)
    limit = max_step(SINE_GAIN, 660.0, sr, crossfade_frames)
    with AudioRuntime(audio_settings()) as rt:
        rt.start(a, a.new_state())
        _listen(our_ports(cap, "out"), cap)
        skip_if_graph_busy(cap, rt)

        def measure() -> dict:
            before = rt.stats()
            cap.start()
            for i in range(1000):
                rt.load(b if i % 2 == 0 else a)
            rt.load(a)  # end on the first program: 1001 swaps, so the next attempt alternates alike
            time.sleep(0.1)
            x, report = cap.stop()
            after = rt.stats()
            assert after["swaps"] - before["swaps"] == 1001
            assert np.abs(x).max() > 0.9 * SINE_GAIN  # it kept playing throughout
            assert after["nan_blocks"] == 0 and after["clipped_samples"] == 0
            clicks = np.flatnonzero(np.abs(np.diff(x)) > limit)
            return {**report, "runtime_xruns": after["xruns"] - before["xruns"], "clicks": len(clicks),
                    "clicks_clear": int(clear_of(clicks, report["xrun_at"]).sum()),
                    "judged": float(clear_of(np.arange(0, len(x), 64), report["xrun_at"]).mean())}

        reports = attempts(3, measure)
    print("1000 swaps, attempts by xruns:", _distribution(reports, "xruns"), reports)
    # An xrun is itself a glitch on JACK (the non-real-time server's noise): no swap may click
    # where none reached, and most of what was recorded is judged so.
    assert all(r["clicks_clear"] == 0 for r in reports), reports
    assert np.mean([r["judged"] for r in reports]) >= 0.5, reports


@pytest.mark.jack
@pytest.mark.skipif(ON_PIPEWIRE, reason="PipeWire runs on a null sink here: no capture device to take input from")
def test_input_channels_reach_the_kernel(loop_program, capture):
    """A JACK test sine played into the runtime's input comes back out at half gain."""
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    sr = cap.info["sample_rate"]
    with AudioRuntime(audio_settings(channels_in=1, channels_out=1)) as rt:
        rt.start(loop_program, loop_program.new_state())
        inputs = our_ports(cap, "in")
        assert len(inputs) == 1
        cap.connect(cap.info["output"], inputs[0])
        _listen(our_ports(cap, "out"), cap)
        cap.start()
        time.sleep(0.5)
        x, _ = cap.stop()
    assert abs(frequency_hz(x, sr) - 1000.0) < 0.5
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    assert abs(rms - 0.5 * 0.5 / math.sqrt(2)) < 0.01


@pytest.mark.jack
def test_close_fades_out_and_leaves_no_port(sine_programs, capture):
    from runtimes.audio import AudioRuntime

    cap = capture(1)
    sr = cap.info["sample_rate"]
    rt = AudioRuntime(audio_settings())
    rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
    _listen(our_ports(cap, "out"), cap)
    cap.start()
    time.sleep(0.3)
    rt.close()
    x, _ = cap.stop()
    rt.close()  # closing twice is fine
    assert our_ports(cap, "") == []
    crossfade_frames = round(AUDIO.defaults["crossfade_ms"] * sr / 1000)
    last = int(np.nonzero(x)[0][-1])
    fade_out = x[last - 4 * crossfade_frames:]  # the fade and the silence after it
    assert np.abs(np.diff(fade_out)).max() <= max_step(SINE_GAIN, 440.0, sr, crossfade_frames)
    assert np.abs(x[last - crossfade_frames // 2:last + 1]).max() <= 0.5 * SINE_GAIN + 1e-3  # faded
    assert np.abs(x[-256:]).max() == 0.0  # silent before the ports went away
    with pytest.raises(RuntimeInitError):
        rt.load(sine_programs[660.0])


@pytest.mark.jack
@pytest.mark.parametrize("settings, reason", [
    ({"device": "no-such-device"}, "No output device matching 'no-such-device'"),
    ({"sample_rate": 44100}, "Invalid sample rate"),
])
def test_unopenable_device_says_why_and_lists_devices(sine_programs, settings, reason):
    from runtimes.audio import AudioRuntime

    rt = AudioRuntime(audio_settings(**settings))
    with pytest.raises(RuntimeInitError) as info:
        rt.start(sine_programs[440.0], sine_programs[440.0].new_state())
    assert reason in str(info.value)
    assert "available devices" in str(info.value) and ", JACK Audio Connection Kit (" in str(info.value)
    rt.close()


NAN_LATER_PATCH = '''
import math


class State:
    freq_hz = 660.0
    gain = 0.2
    phase = 0.0
    blocks = 0


def audio(s, ctx, inp, out):
    s.blocks += 1
    for i in range(out.shape[0]):
        out[i, 0] = s.gain * math.sin(s.phase) if s.blocks < 100 else math.nan  # fails live, not in its test run
        s.phase = (s.phase + 2.0 * math.pi * s.freq_hz / ctx.sample_rate) % (2.0 * math.pi)
'''


@pytest.mark.jack
def test_a_program_that_fails_live_is_replaced_by_the_one_before_and_logged(tmp_path, capture, caplog):
    import logging

    from host import Host

    caplog.set_level(logging.INFO, logger="livehost")
    cap = capture(1)
    sr = cap.info["sample_rate"]
    proj = write_audio_project(tmp_path, "live", 'channels_out = 1\n', (Path(__file__).parents[1] / "examples/sine/patch.py").read_text())
    good = compile_project(proj)
    with Host(proj, debounce_s=0.02) as host:
        wait_for(lambda: host.runtime is not None and host.runtime.program is not None)
        _listen(our_ports(cap, "out"), cap)
        (proj / "patch.py").write_text(NAN_LATER_PATCH)
        bad = compile_project(proj)
        wait_for(lambda: any(r.getMessage().startswith("Kernel fault") for r in caplog.records), 10)
        cap.start()
        time.sleep(0.3)
        x, _ = cap.stop()
        playing = host.runtime.program.source_hash
    faults = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Kernel fault")]
    assert faults == [f"Kernel fault: program {bad['source_hash']} wrote NaN/inf for {NAN_RUN_LIMIT} blocks in a "
                      f"row; playing {good['source_hash']} (the program before it)"]
    assert playing == good["source_hash"]
    assert abs(frequency_hz(x, sr) - 440.0) < 0.5  # the sine before it, heard again
