"""Live numbers: a float written in a kernel is read from a hidden state field, so
changing it reuses the build; what is heard is what the text says."""

import numpy as np
import pytest
import soundfile as sf

from compiler_bridge.compile import compile_project
from compiler_bridge.errors import ConfigError, PatchError
from compiler_bridge.numbers import MAX_NUMBERS, live_numbers
from compiler_bridge.split import kernel_texts
from compiler_bridge.program import Program
from compiler_bridge.state import StateLayout
from helpers import pitch_hz
from runtimes.offline import render


def _render(project, tmp_path, name: str) -> np.ndarray:
    program = Program.from_compiled(compile_project(project))
    data, _ = sf.read(render(program, tmp_path / f"{name}.wav", 0.5), dtype="float32")
    return data[:, 0]


def test_a_changed_number_reuses_the_build_and_plays_the_samples_of_that_number_compiled_in(project, tmp_path):
    sine = project("sine")
    patch = sine / "patch.py"
    source = patch.read_text()
    first = compile_project(sine)
    patch.write_text(source.replace("step = 2.0 *", "step = 3.0 *"))
    number = compile_project(sine)
    assert number["reused_build"] and number["build_dir"] == first["build_dir"]
    assert number["source_hash"] != first["source_hash"]
    heard = _render(sine, tmp_path, "number")

    # the same factor as an int, which is compiled in: a build of its own
    patch.write_text(source.replace("step = 2.0 *", "step = 3 *"))
    compiled_in = compile_project(sine)
    assert not compiled_in["reused_build"] and compiled_in["build_dir"] != first["build_dir"]
    expected = _render(sine, tmp_path, "int")

    np.testing.assert_array_equal(heard, expected)
    assert pitch_hz(heard) == pytest.approx(660.0, abs=0.5)


def test_a_playing_state_keeps_its_fields_and_takes_the_changed_number(project):
    sine = project("sine")
    patch = sine / "patch.py"
    old = StateLayout.from_json(compile_project(sine)["state"])
    patch.write_text(patch.read_text().replace("step = 2.0 *", "step = 3.0 *"))
    new = StateLayout.from_json(compile_project(sine)["state"])
    playing = old.defaults()
    playing["phase"], playing["freq_hz"] = 1.25, 440.0
    carried = new.carry(old, playing)
    assert carried["phase"][0] == 1.25  # running value kept
    assert carried["_audio_0"][0] == 3.0 and carried["_audio_1"][0] == 2.0  # the text's numbers


def test_hidden_fields_are_not_offered_by_name(project):
    sine = project("sine")
    layout = StateLayout.from_json(compile_project(sine)["state"])
    assert layout.names() == ["freq_hz", "gain", "phase"]
    assert [f.name for f in layout.fields][3:] == ["_audio_0", "_audio_1", "_audio_2"]
    toml = sine / "livehost.toml"
    toml.write_text(toml.read_text() + '\n[[runtime_settings]]\nruntime = "midi"\nnote_field = "_audio_0"\n')
    with pytest.raises(ConfigError, match="no state field '_audio_0'"):
        compile_project(sine)


def test_an_error_on_a_line_with_numbers_names_that_line(project):
    sine = project("sine")
    patch = sine / "patch.py"
    source = patch.read_text().replace("v = s.gain * math.sin(s.phase)", "v = 0.5 * s.gian * math.sin(s.phase)")
    patch.write_text(source)
    with pytest.raises(PatchError) as err:
        compile_project(sine)
    line = source.splitlines().index("        v = 0.5 * s.gian * math.sin(s.phase)") + 1
    assert err.value.line == line and "gian" in str(err.value)


KEPT = '''\
import math

SCALE = 0.5


def helper(x):
    return x * 0.25


def midi(s, ctx, ev):
    s.x = 1.5


@decorate
def audio(s, ctx, inp, out):
    s.y = 0.5
'''


@pytest.mark.parametrize("source, numbers", [
    # ints, numbers outside the kernels, nested scopes, f-strings, annotations and match patterns stay
    ("def audio(s, ctx, inp, out):\n"
     "    n = 4\n"
     "    f = lambda x: x * 0.5\n"
     "    t = [0.25 * i for i in range(n)]\n"
     "    def g(y):\n"
     "        return y + 0.125\n"
     "    z: float = 0.75\n"
     "    out[0, 0] = -1.5 + z + 2 ** 0.5\n",
     (("_audio_0", 0.75), ("_audio_1", 1.5), ("_audio_2", 0.5))),
    (KEPT, (("_midi_0", 1.5),)),  # a helper, a decorated kernel
    ("def audio(st, ctx, inp, out):\n    st = st\n    out[0, 0] = 0.5\n", ()),  # rebinds its state
    ("def audio(s, ctx, inp, out):\n    out[0, 0] = 0.5\n\n\naudio = audio\n", ()),  # bound twice
    ("def audio(s, ctx, inp, out):\n    out[0, 0] = 1e400 + 0.5\n", (("_audio_0", 0.5),)),  # inf stays
    ("def audio(s, ctx, inp, out):\n    t = (" + ", ".join(["0.5"] * (MAX_NUMBERS + 1)) + ")\n", ()),  # a table
    ("def audio(s, ctx, inp, out):\n    x = (1.0,\n         2.0)\n", (("_audio_0", 1.0), ("_audio_1", 2.0))),
    ("def audio(s, ctx, inp, out)\n    x = 1.0\n", ()),  # does not parse: the compile says why
])
def test_which_numbers_are_live(source, numbers):
    text, found = live_numbers(source)
    assert found == numbers
    assert text.count("\n") == source.count("\n")
    expected = source
    if numbers:
        compile(text, "patch.py", "exec")  # still Python
        for name, value in numbers:
            assert f"s.{name}" in text
    else:
        assert text == expected


def test_numbers_after_wide_characters_on_their_line_are_replaced_where_they_are():
    source = 'def audio(s, ctx, inp, out):\n    x = "ñ♪" and 0.5 + 0.25  # ♪\n'
    text, numbers = live_numbers(source)
    assert text == 'def audio(s, ctx, inp, out):\n    x = "ñ♪" and s._audio_0 + s._audio_1  # ♪\n'
    assert numbers == (("_audio_0", 0.5), ("_audio_1", 0.25))


def test_lines_are_counted_as_python_counts_them():
    # a form feed or a line separator inside a string is no line break to Python (str.splitlines
    # takes them as one): the numbers after them are still replaced where they are
    source = ('import math\n\x0c\nX = "a\u2028b"\r\ndef audio(s, ctx, inp, out):\r\n    out[0, 0] = 0.5\r\n\n'
              'def midi(s, ctx, ev):\r    x = 1.5\r')
    text, numbers = live_numbers(source)
    assert text == source.replace("0.5", "s._audio_0").replace("1.5", "s._midi_0")
    assert numbers == (("_audio_0", 0.5), ("_midi_0", 1.5))
    texts = kernel_texts(text, ["audio", "midi"])
    assert texts["audio"] == text.replace("    x = s._midi_0\r", "    pass\r")
    assert texts["midi"] == text.replace("    out[0, 0] = s._audio_0\r\n", "    pass\r\n")
