"""Compiling: immutable builds, test runs, file:line errors, last good kept."""

import json
from pathlib import Path

import numpy as np
import pytest

from compiler_bridge.compile import code_text, compile_project
from compiler_bridge.errors import ConfigError, PatchError
from compiler_bridge.numbers import live_numbers
from compiler_bridge.split import kernel_texts
from compiler_bridge.program import Program, read_compiled
from compiler_bridge.worker import CompileWorker
from conftest import EXAMPLES

def kernel_builds(compiled: dict) -> list[Path]:
    """The kernel builds whose object files a build's entry points are."""
    lh = Path(compiled["build_dir"]).parent.parent
    return [(lh / compiled["natives"][k]["object"]).parent for k in compiled["kernels"]]


SINE_HEAD = "import math\n\n\nclass State:\n    freq_hz = 440.0\n\n\n"


def test_compile_writes_an_immutable_build(project):
    sine = project("sine")
    compiled = compile_project(sine)
    lh = sine / ".livehost"
    on_disk = json.loads((lh / "compiled.json").read_text())
    assert on_disk["build_dir"] == f"build/{compiled['build']}" and "project" not in on_disk  # relocatable
    assert read_compiled(sine) == json.loads(json.dumps(compiled))
    assert not (lh / "error.json").exists()
    build = Path(compiled["build_dir"])
    assert build.parent == lh / "build" and build.name == compiled["build"]
    # the patch as numba compiles it: the kernel's numbers read from hidden state fields, on the same lines
    compiled_text, numbers = live_numbers((sine / "patch.py").read_text())
    assert (build / "patch.py").read_text() == compiled_text
    assert numbers == (("_audio_0", 2.0), ("_audio_1", 2.0), ("_audio_2", 2.0))
    assert compiled_text.count("\n") == (sine / "patch.py").read_text().count("\n")
    # each kernel's entry point comes from a kernel build: an object file, what it is beside it
    (kernel,) = kernel_builds(compiled)
    assert kernel.parent == lh / "kernels" and (kernel / "patch.py").read_text() == compiled_text
    obj = kernel / f"{compiled['entry']}.o"
    assert obj.read_bytes()[:4] == b"\x7fELF" and compiled["natives"]["audio"]["object"] == str(obj.relative_to(lh))
    assert json.loads((kernel / f"{compiled['entry']}.json").read_text()) == compiled["natives"]["audio"]
    assert compiled["kernels"] == ["audio"]
    assert [f["name"] for f in compiled["state"]] == ["freq_hz", "gain", "phase", "_audio_0", "_audio_1", "_audio_2"]
    assert compiled["config"]["runtime_settings"][0]["crossfade_ms"] == 10.0
    program = Program.from_compiled(compiled)
    assert set(program.kernels) == {"audio"} and program.kernels["audio"] > 0


def test_identical_projects_each_get_their_own_cached_build(project):
    a, b = compile_project(project("sine", "a")), compile_project(project("sine", "b"))
    assert a["source_hash"] == b["source_hash"] and a["build_dir"] != b["build_dir"]
    for compiled in (a, b):
        (kernel,) = kernel_builds(compiled)
        assert (kernel / f"{compiled['entry']}.o").is_file() and kernel.parent.parent == Path(compiled["build_dir"]).parent.parent
        assert Program.from_compiled(compiled).kernels["audio"] > 0


def test_a_save_after_compile_cannot_change_the_build(project):
    sine = project("sine")
    compiled = compile_project(sine)
    (sine / "patch.py").write_text((sine / "patch.py").read_text().replace("440.0", "550.0"))
    assert "440.0" in (Path(compiled["build_dir"]) / "patch.py").read_text()


BAD = [
    ("def audio(s, ctx, inp, out)\n    pass\n", 8, "SyntaxError"),
    ("def audio(s, ctx, inp, out):\n    out[0, 0] = undefined_name\n", 9, "name 'undefined_name' is not defined"),
    ("def audio(s, ctx, inp, out):\n    out[0, 0] = s.freq\n", 9, "no field 'freq'"),
    ("def audio(s, ctx, inp, out):\n    x = 1\n    out[0, 0] = 'a' + x\n", 10, "numba cannot compile this"),
    ("def audio(s, ctx, inp, out):\n    if ctx.tick == 3:\n        raise ValueError('too loud')\n", 10,
     "audio() raised ValueError: too loud in the test run"),
    # numba's C callback keeps the GIL after reporting it: the test run hung on it
    ("def audio(s, ctx, inp, out):\n    if ctx.tick == 3:\n        raise ValueError(s.freq_hz)\n", 10,
     "raise ValueError(s.freq_hz) raises an exception made at run time in the audio callback"),
    ("def audio(s, ctx, inp, out):\n    out[0, 0] = math.inf\n", 8, "audio() wrote NaN or inf in test block 0"),
    ("def audio(s, ctx, inp, out):\n    s.freq_hz = s.freq_hz * 1e300\n", 8,
     "made state field 'freq_hz' NaN or inf"),
    ("def audio(s, ctx, inp, out):\n    x = 0.0\n    for i in range(2_000_000):\n        x += math.sin(i)\n"
     "    out[0, 0] = x * 1e-12\n", 8, "per block; a block lasts 5.33 ms (256 frames at 48000 Hz)"),
    ("def midi(s, ctx, ev):\n    x = 0.0\n    for i in range(2_000_000):\n        x += math.sin(i)\n"
     "    s.freq_hz = 440.0 + x * 1e-12\n", 8, "midi() takes"),
    ("def midi(s, ctx, ev):\n    if ctx.ppqn != 24 or ctx.beat * 24 != ctx.tick:\n        raise ValueError('ctx')\n"
     "    note_on(ev, 60, 300)\n", 11, "name 'note_on' is not defined"),
    ("x = 1 / 0\n", 8, "ZeroDivisionError"),
    ("import numpy as np\n\n\ndef audio(s, ctx, inp, out):\n    buf = np.zeros(16)\n    out[0, 0] = buf[0]\n", 12,
     "allocates in the audio callback: move np.zeros(16) into State as an array"),
    ("def midi(s, ctx, ev):\n    print(ctx.tick)\n", 9,
     "print() takes the GIL in the MIDI callback, which must never wait for Python: remove it"),
    ("import numba\nimport numpy as np\n\n\n@numba.njit\ndef helper(n):\n    return np.ones(n).sum()\n\n\n"
     "def audio(s, ctx, inp, out):\n    out[0, 0] = helper(4)\n", 14,
     "allocates in the audio callback (in helper(), called on line 18): move np.ones(n) into State as an array"),
    ("def helper():\n    pass\n", None, "defines no kernel"),
]


@pytest.mark.parametrize("body, line, words", BAD)
def test_bad_patch_names_the_line_and_keeps_the_last_good_build(project, body, line, words):
    sine = project("sine")
    good = compile_project(sine)
    (sine / "patch.py").write_text(SINE_HEAD + body)
    with pytest.raises(PatchError) as info:
        compile_project(sine)
    shown = f"{sine / 'patch.py'}:{line}: " if line else f"{sine / 'patch.py'}: "
    assert str(info.value).startswith(shown), str(info.value)
    assert words in str(info.value)
    assert read_compiled(sine)["source_hash"] == good["source_hash"]
    error = json.loads((sine / ".livehost" / "error.json").read_text())
    assert error["line"] == line and error["text"] == str(info.value)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if (p / "patch.py").exists()))
def test_every_example_compiles(project, example):
    """None is refused by the real-time checks: views, carrays and the MIDI helpers neither allocate nor take the GIL."""
    assert compile_project(project(example))["kernels"]


def test_config_field_names_are_checked_against_the_patch(project):
    seq = project("sequencer")
    toml = seq / "livehost.toml"
    toml.write_text(toml.read_text() + '\n[[runtime_settings]]\nruntime = "midi"\ncc_map = { 74 = "cutoff" }\n')
    with pytest.raises(ConfigError) as info:
        compile_project(seq)
    assert ":15: runtime_settings[2].cc_map: patch.py has no state field 'cutoff'" in str(info.value)


def test_unknown_runtime_compiles_with_a_warning(project):
    sine = project("sine")
    toml = sine / "livehost.toml"
    toml.write_text(toml.read_text().replace('runtime = "audio"', 'runtime = "audoi"'))
    compiled = compile_project(sine)
    assert "did you mean 'audio'?" in compiled["warnings"][0]


@pytest.fixture(scope="module")
def worker():
    from conftest import SESSION_PIDS

    w = CompileWorker(timeout_s=120.0).start()
    SESSION_PIDS.add(w.pid)
    yield w
    w.close()


def test_worker_compiles_and_reports_errors(worker, project):
    from conftest import SESSION_PIDS

    sine = project("sine")
    ok = worker.compile(sine)
    assert ok.ok and ok.compiled["source_hash"] == read_compiled(sine)["source_hash"]
    (sine / "patch.py").write_text(SINE_HEAD + "print('noise on stdout')\ndef audio(s, ctx, inp, out):\n    x = y\n")
    bad = worker.compile(sine)
    assert not bad.ok and bad.error["line"] == 10 and "name 'y' is not defined" in bad.text
    SESSION_PIDS.add(worker.pid)


def test_an_endless_loop_is_refused_after_the_test_run_limit_and_the_worker_stays(worker, project):
    from compiler_bridge.compile import TEST_RUN_TIMEOUT_S

    sine = project("sine")
    (sine / "patch.py").write_text(SINE_HEAD + "def audio(s, ctx, inp, out):\n    while s.freq_hz > 0:\n"
                                   "        s.freq_hz += 1.0\n")
    pid = worker.pid
    hung = worker.compile(sine)
    print(f"endless loop refused {hung.seconds:.2f} s after the request")
    assert not hung.ok and hung.error["line"] == 8  # def audio
    assert hung.error["message"] == (f"audio() did not finish its test run within {TEST_RUN_TIMEOUT_S:g} s: "
                                     "an endless loop, or far slower than its budget")
    assert json.loads((sine / ".livehost" / "error.json").read_text())["message"] == hung.error["message"]
    assert worker.pid == pid and worker.restarts == 0  # only the compile's own child was stopped
    (sine / "patch.py").write_text((Path(__file__).parents[1] / "examples/sine/patch.py").read_text())
    assert worker.compile(sine).ok


def test_worker_survives_a_patch_that_exits_or_kills_its_process(worker, project):
    from conftest import SESSION_PIDS

    sine = project("sine")
    (sine / "patch.py").write_text("import sys\nsys.exit(3)\n")
    exited = worker.compile(sine)
    assert not exited.ok and exited.error["line"] == 2 and "SystemExit: 3" in exited.text
    (sine / "patch.py").write_text("import os\nos._exit(7)\n")
    killed = worker.compile(sine)
    assert not killed.ok and killed.error["message"] == "the compile exited (code 7) while compiling"
    (sine / "patch.py").write_text((Path(__file__).parents[1] / "examples/sine/patch.py").read_text())
    assert worker.compile(sine).ok and worker.restarts == 0  # the worker itself never exited
    SESSION_PIDS.add(worker.pid)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_save_of_the_same_build_is_test_run_by_a_child_that_loaded_it_ahead(worker, project):
    """The worker keeps one child with the last good build loaded: a save of defaults is
    only its test run. A bad value is still refused; a save of other code discards it."""
    sine = project("sine")
    patch = sine / "patch.py"
    source = patch.read_text()
    first = worker.compile(sine)
    assert first.ok and not first.compiled["prepared"]
    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 660.0"))
    default = worker.compile(sine)
    assert default.ok and default.compiled["prepared"] and default.compiled["reused_build"]
    assert [f["default"] for f in default.compiled["state"]][0] == 660.0
    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 1e999"))  # inf: the sine turns NaN
    bad = worker.compile(sine)
    assert not bad.ok and bad.error["line"] == 12 and "wrote NaN or inf" in bad.text
    assert read_compiled(sine)["source_hash"] == default.compiled["source_hash"]
    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 550.0"))
    again = worker.compile(sine)  # a child with the last good build was made ready after the refusal
    assert again.ok and again.compiled["prepared"] and again.compiled["state"][0]["default"] == 550.0
    from helpers import wait_for

    # Forked once the reply is out: one child holding this build, one ready for any build.
    wait_for(lambda: len(_children(worker.pid)) == 2)
    before = set(_children(worker.pid))
    patch.write_text(source + "# another build\n")
    edited = worker.compile(sine)
    assert edited.ok and not edited.compiled["prepared"] and edited.compiled["build"] != first.compiled["build"]
    # Again two once the new ones are forked (a discarded child left unreaped would make three,
    # and a zombie stays listed), and the child of the old build is not one of them.
    wait_for(lambda: len(_children(worker.pid)) == 2 and not any(_zombie(c) for c in _children(worker.pid)))
    assert len(before & set(_children(worker.pid))) <= 1  # at most the one for any build, if it was still warming


def test_the_child_ready_for_any_build_warms_up_on_the_last_good_patch(worker, project, tmp_path):
    """A code edit is compiled by a child that compiled the patch it edits just before (numba
    meets what it has met), not the worker's own small patch. The patch's top-level code
    writes where it runs: the warm-up runs it in a throwaway project of its own."""
    from helpers import wait_for

    sine = project("sine")
    runs = tmp_path / "runs.txt"
    patch = sine / "patch.py"
    patch.write_text(f"open({str(runs)!r}, 'a').write(__file__ + '\\n')\n" + patch.read_text())

    def warm_ups() -> list[str]:
        return [line for line in runs.read_text().splitlines() if "livehost-warm-" in line] if runs.exists() else []

    # A child ready for any build is forked once the one before it is used: by a code edit that
    # found it warm. (One still warming on an earlier test's patch is passed over by a fresh fork.)
    for k in range(4):
        patch.write_text(patch.read_text().replace("s.phase += step", f"s.phase += step * {k + 1}"))
        compiled = worker.compile(sine)
        assert compiled.ok and not compiled.compiled["reused_build"]
        try:
            wait_for(lambda: warm_ups(), timeout_s=10.0)
            break
        except AssertionError:
            continue
    assert warm_ups(), "no child warmed up on the patch"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def test_old_builds_are_pruned_but_the_published_one_stays(project):
    from compiler_bridge.compile import KEEP_BUILDS

    sine = project("sine")
    patch = sine / "patch.py"
    for i in range(KEEP_BUILDS + 3):
        patch.write_text(patch.read_text() + f"\n# take {i}\n")
        compiled = compile_project(sine)
    builds = list((sine / ".livehost" / "build").iterdir())
    assert len(builds) == KEEP_BUILDS and Path(compiled["build_dir"]) in builds


def test_the_test_run_feeds_the_selected_runtime_settings(project):
    seq = project("sequencer")
    toml = seq / "livehost.toml"
    toml.write_text(toml.read_text().replace("channel = 10", "channel = 10\nppqn = 96\ntempo_bpm = 90.0"))
    (seq / "patch.py").write_text(
        "class State:\n    calls = 0\n\n\ndef midi(s, ctx, ev):\n"
        "    if ctx.ppqn != 96 or ctx.channel != 9 or ctx.tempo_bpm != 90.0 or ctx.beat * 96 != ctx.tick:\n"
        "        raise ValueError('not what the midi runtime would give')\n"
        "    s.calls += 1\n")
    assert compile_project(seq)["kernels"] == ["midi"]
    toml.write_text(toml.read_text().replace("ppqn = 96", "ppqn = 48"))
    with pytest.raises(PatchError, match="not what the midi runtime would give"):
        compile_project(seq)


ORPHAN_SCRIPT = '''
import sys
from compiler_bridge.worker import CompileWorker
worker = CompileWorker(timeout_s=600.0).start()
print(worker.pid, flush=True)
worker.compile(sys.argv[1])  # an endless loop: killed with -9 while this runs
'''


def test_a_killed_host_leaves_no_worker_and_no_compile_behind(project):
    """kill -9 of the process that owns the worker, while the worker test-runs an endless loop."""
    import signal
    import subprocess
    import sys

    from helpers import wait_for

    sine = project("sine")
    (sine / "patch.py").write_text(SINE_HEAD + "def audio(s, ctx, inp, out):\n    while s.freq_hz > 0:\n"
                                   "        s.freq_hz += 1.0\n")
    owner = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(sine)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(owner.stdout.readline())

    def compile_child() -> int | None:
        children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    wait_for(lambda: compile_child() is not None, 60)  # the compile's own child runs the loop
    child = compile_child()
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.stdout.close()

    def gone(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().split()[2] == "Z"

    # Sooner than the compile's own test-run limit would end them: they died with their parent.
    from compiler_bridge.compile import TEST_RUN_TIMEOUT_S

    wait_for(lambda: gone(worker_pid) and gone(child), TEST_RUN_TIMEOUT_S / 2)


def _written(compiled: dict) -> dict[str, float]:
    """The files of *compiled*'s kernel builds, with their times."""
    return {f"{k.name}/{p.name}": p.stat().st_mtime_ns for k in kernel_builds(compiled) for p in k.rglob("*")}


TWO_KERNELS = '''\
import math

from compiler_bridge.api import note_off, note_on


class State:
    phase = 0.0


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = 0.2 * math.sin(s.phase)
        s.phase = (s.phase + 2.0 * math.pi * 440.0 / ctx.sample_rate) % (2.0 * math.pi)


def midi(s, ctx, ev):
    if ctx.tick % 6 == 0:
        note_on(ev, 60, 90)
    elif ctx.tick % 6 == 3:
        note_off(ev, 60)
'''


def test_a_kernel_whose_code_did_not_change_is_not_compiled_again(project):
    sine = project("sine")
    patch = sine / "patch.py"
    patch.write_text(TWO_KERNELS)
    first = compile_project(sine)
    audio, midi = kernel_builds(first)
    cache = _written(first)

    # audio's code only (an int: the state's layout, which every entry point knows, stays as it was)
    patch.write_text(TWO_KERNELS.replace("math.sin(s.phase)", "math.sin(s.phase + 0)"))
    edited = compile_project(sine)
    new_audio, same_midi = kernel_builds(edited)
    assert not edited["reused_build"] and edited["build"] != first["build"]
    assert new_audio != audio and same_midi == midi
    assert {k: v for k, v in _written(edited).items() if k.startswith(midi.name)} == {
        k: v for k, v in cache.items() if k.startswith(midi.name)}  # midi's entry point: its object file as it was
    assert Program.from_compiled(edited).kernels.keys() == {"audio", "midi"}

    patch.write_text(TWO_KERNELS.replace("import math\n", "import math\n\nBASE = 60\n"))  # shared code: both
    shared = compile_project(sine)
    assert not set(kernel_builds(shared)) & {audio, midi, new_audio}


def test_saves_of_defaults_or_settings_reuse_the_build_and_compile_nothing(project):
    sine = project("sine")
    patch, toml = sine / "patch.py", sine / "livehost.toml"
    source = patch.read_text()
    first = compile_project(sine)
    cache = _written(first)
    assert not first["reused_build"] and cache

    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 660.0"))
    default = compile_project(sine)
    toml.write_text(toml.read_text().replace("crossfade_ms = 10.0", "crossfade_ms = 25.0"))
    settings = compile_project(sine)
    for compiled in (default, settings):
        assert compiled["reused_build"] and (compiled["build"], compiled["entry"]) == (first["build"], first["entry"])
        assert compiled["source_hash"] != first["source_hash"]
    assert _written(first) == cache  # nothing was compiled, nothing written
    assert [f["default"] for f in default["state"]][0] == 660.0
    assert settings["config"]["runtime_settings"][0]["crossfade_ms"] == 25.0
    # the patch's very text was test-run, and a test run would feed it the same: nothing ran at all
    assert settings["compile_seconds"] == 0.0 and default["compile_seconds"] > 0.0
    toml.write_text(toml.read_text().replace('runtime = "audio"', 'runtime = "audio"\nblock_frames = 512'))
    reshaped = compile_project(sine)  # the test run's blocks change: it runs again, on the cached build
    assert reshaped["reused_build"] and reshaped["compile_seconds"] > 0.0 and reshaped["shape"]["block_frames"] == 512

    # a default of another type is another state layout: the same build, entry points of their own
    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 660"))
    retyped = compile_project(sine)
    assert retyped["build"] == first["build"] and retyped["entry"] != first["entry"] and not retyped["reused_build"]
    # any change to the code, a comment included, is a new build
    patch.write_text(source + "# a comment\n")
    edited = compile_project(sine)
    assert edited["build"] != first["build"] and not edited["reused_build"]


def test_defaults_that_other_code_reads_are_code(project):
    sine = project("sine")
    patch = sine / "patch.py"
    source = patch.read_text() + "\nTWICE = State.freq_hz * 2.0  # a global the kernels could read, frozen\n"
    patch.write_text(source)
    first = compile_project(sine)
    patch.write_text(source.replace("freq_hz = 440.0", "freq_hz = 660.0"))
    assert compile_project(sine)["build"] != first["build"]


def test_a_bad_default_on_a_reused_build_is_still_caught_by_the_bounds_checked_run(project):
    sine = project("sine")
    patch = sine / "patch.py"
    source = SINE_HEAD.replace("    freq_hz = 440.0\n", "    freq_hz = 440.0\n    notes = array([1.0, 2.0])\n"
                               "    pick = 0\n") + "def audio(s, ctx, inp, out):\n    out[0, 0] = s.notes[s.pick]\n"
    patch.write_text("from compiler_bridge.api import array\n" + source)
    first = compile_project(sine)
    patch.write_text("from compiler_bridge.api import array\n" + source.replace("pick = 0", "pick = 5"))
    with pytest.raises(PatchError) as info:
        compile_project(sine)
    assert ":11: audio() raised IndexError" in str(info.value)  # the kernel (numba tells no line)
    assert "in the test run" in str(info.value)
    assert read_compiled(sine)["source_hash"] == first["source_hash"]  # the last good one stays


SPLIT = '''\
def helper(s, ctx, ev):
    return {helper}


def audio(s, ctx, inp, out):
    out[0, 0] = 1.0{audio_calls}


def midi(s, ctx, ev):
    x = 1
    y = 2
'''


@pytest.mark.parametrize("helper, audio_calls, audio_keeps_midi, midi_keeps_audio", [
    ("0", "", False, False),  # each kernel's text leaves the other's body out
    ("0", "\n    midi(s, ctx, None)", True, False),  # audio calls midi: its text keeps midi
    ("midi(s, ctx, ev)", "", True, False),  # a helper calls midi: every text keeps it
])
def test_each_kernel_is_compiled_from_a_text_of_its_own(helper, audio_calls, audio_keeps_midi, midi_keeps_audio):
    source = SPLIT.format(helper=helper, audio_calls=audio_calls)
    texts = kernel_texts(source, ["audio", "midi"])
    for kernel, keeps_other in (("audio", audio_keeps_midi), ("midi", midi_keeps_audio)):
        text = texts[kernel]
        assert text.count("\n") == source.count("\n")  # errors keep their lines
        other = "    x = 1\n    y = 2\n" if kernel == "audio" else "    out[0, 0] = 1.0"
        assert (other in text) == keeps_other
        assert ("    out[0, 0] = 1.0" if kernel == "audio" else "    x = 1\n    y = 2\n") in text
    if not audio_keeps_midi:
        assert texts["audio"].endswith("def midi(s, ctx, ev):\n    pass\n\n")


def test_a_patch_that_does_not_parse_is_one_text_for_every_kernel():
    source = "def audio(s, ctx, inp, out)\n    pass\n"
    assert kernel_texts(source, ["audio"]) == {"audio": source}


def test_a_form_feed_does_not_shift_the_defaults_left_out_of_a_build():
    # Python counts "\f\n" as one line (str.splitlines as two): the values blanked out are the defaults
    source = "import math\n\x0c\nclass State:\n    y = 5  # steps\n    x = 1.0\n"
    assert code_text(source) == "import math\n\x0c\nclass State:\n    y = ...  # steps\n    x = ...\n"


def test_midi_in_is_test_run_with_a_keyboard_s_messages_and_a_raise_in_it_names_its_line(project):
    sine = project("sine")
    patch = sine / "patch.py"
    source = patch.read_text().rstrip("\n") + "\n\n\n"
    handler = "def midi_in(s, ctx, status, data1, data2):\n    if status & 0xF0 == 0x80 and data1 == 127:\n"
    patch.write_text(source + handler + "        raise ValueError('the top key')\n")
    with pytest.raises(PatchError) as raised:
        compile_project(sine)
    assert raised.value.line == source.count("\n") + 3 and "midi_in() raised" in raised.value.message
    patch.write_text(source + handler + "        s.freq_hz = 880.0\n")
    assert compile_project(sine)["kernels"] == ["audio", "midi_in"]
    patch.write_text("class State:\n    x = 0\n\n\n" + handler + "        s.x = 1\n")
    with pytest.raises(PatchError) as alone:
        compile_project(sine)
    assert "beside midi_in" in alone.value.message


HELPER_PATCH = '''import math


def fold(x):
    while x >= 1.0:
        x -= 1.0
    return x


def tri(phase):
    """A triangle from a phase in cycles: a plain helper calling another."""
    return 4.0 * abs(fold(phase) - 0.5) - 1.0


class State:
    phase = 0.0


def audio(s, ctx, inp, out):
    for i in range(out.shape[0]):
        out[i, 0] = 0.5 * tri(s.phase)
        s.phase = fold(s.phase + 0.01)
'''


def test_a_patch_s_plain_helpers_are_compiled_with_its_kernels(project, tmp_path):
    """No decorator needed on a helper a kernel calls (it was refused as "NameError: name
    'tri' is not defined", at its def); a raise inside one is reported at its line."""
    import soundfile as sf

    from runtimes.offline import render

    sine = project("sine")
    (sine / "patch.py").write_text(HELPER_PATCH)
    program = Program.from_compiled(compile_project(sine))
    data, _ = sf.read(render(program, tmp_path / "tri.wav", 0.01), dtype="float32")
    plain = {}
    exec(HELPER_PATCH, plain)  # the same helpers run as Python: the same float64 arithmetic
    phase, expected = 0.0, []
    for _ in range(len(data)):
        expected.append(0.5 * plain["tri"](phase))
        phase = plain["fold"](phase + 0.01)
    np.testing.assert_array_equal(data[:, 0], np.float32(expected))
    (sine / "patch.py").write_text(HELPER_PATCH.replace("    return x\n", "    if x < -1.0:\n"
                                                        "        raise ValueError('no')\n    return x\n"))
    compile_project(sine)  # a raise the test run does not reach is no fault
    (sine / "patch.py").write_text(HELPER_PATCH.replace("    return x\n", "    if x < 1.0:\n"
                                                        "        raise ValueError('no')\n    return x\n"))
    with pytest.raises(PatchError) as exc:
        compile_project(sine)
    assert exc.value.line == 8 and "ValueError" in str(exc.value)
