"""livehost.toml: defaults merged, errors name file, line and key."""

from pathlib import Path

import pytest

from compiler_bridge.config import load_config
from compiler_bridge.errors import ConfigError

PATCH = "def midi(s, ctx, ev):\n    pass\n"


def write(tmp_path: Path, toml: str) -> Path:
    (tmp_path / "livehost.toml").write_text(toml)
    (tmp_path / "patch.py").write_text(PATCH)
    return tmp_path


def test_defaults_are_merged(project):
    config = load_config(project("sine"))
    audio, offline = config.runtime_settings
    assert audio == {"runtime": "audio", "device": None, "sample_rate": None, "block_frames": None,
                     "channels_out": 2, "channels_in": 0, "latency": "low", "crossfade_ms": 10.0,
                     "midi_input": None}
    assert offline["seconds"] == 4.0 and offline["sample_rate"] == 48000
    assert config.tempo_bpm == 120.0 and config.selected_runtime == 0 and config.warnings == []


def test_empty_config_selects_the_default_runtime(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.runtime_settings == [{"runtime": "logic", "ppqn": 24, "channel": 1}]


@pytest.mark.parametrize("toml, line, words", [
    ('name = "x"\ntempo_bmp = 120\n', 2, ["unknown key 'tempo_bmp'", "did you mean 'tempo_bpm'"]),
    ('tempo_bpm = "fast"\n', 1, ["tempo_bpm = 'fast'", "expected a number"]),
    ('tempo_bpm = 5000\n', 1, ["tempo_bpm = 5000", "from 20.0 to 999.0"]),
    ('[[runtime_settings]]\nruntime = "audio"\n\n[[runtime_settings]]\nruntime = "midi"\nchanel = 3\n', 6,
     ["runtime_settings[1] (midi)", "unknown key 'chanel'"]),
    ('[[runtime_settings]]\nruntime = "audio"\nblock_frames = 100\n', 3, ["block_frames = 100", "power of two"]),
    ('[[runtime_settings]]\nruntime = "midi"\nppqn = 25\n', 3, ["multiple of 24"]),
    ('[[runtime_settings]]\nruntime = "audio"\nlatency = "fast"\n', 3, ['"low", "high" or seconds']),
    ('[[runtime_settings]]\nruntime = "midi"\ncc_map = { 300 = "x" }\n', 3, ["CC number 0-127"]),
    ('[[runtime_settings]]\nchannel = 2\n', 1, ['needs runtime = "<id>"']),
    ('selected_runtime = 0\n[[runtime_settings]\nruntime = "audio"\n', 2, ["invalid TOML"]),
])
def test_bad_config_names_line_and_key(tmp_path, toml, line, words):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, toml))
    err = info.value
    assert err.line == line
    assert str(err).startswith(f"{tmp_path / 'livehost.toml'}:{line}: ")
    for w in words:
        assert w in str(err)


def test_unknown_runtime_is_a_warning_with_did_you_mean(tmp_path):
    config = load_config(write(tmp_path, '[[runtime_settings]]\nruntime = "audoi"\n'))
    assert config.runtime_settings == [{"runtime": "audoi"}]
    assert len(config.warnings) == 1
    assert "livehost.toml:2: unknown runtime 'audoi'" in config.warnings[0]
    assert "did you mean 'audio'?" in config.warnings[0]


def test_out_of_range_selection_is_a_warning(tmp_path):
    config = load_config(write(tmp_path, 'selected_runtime = 3\n[[runtime_settings]]\nruntime = "midi"\n'))
    assert "selected_runtime = 3 is out of range" in config.warnings[0]
