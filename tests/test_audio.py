"""The Listen tracks: every lesson has a dialogue in the folder's format and an audiobook script."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpcourse import audio, dialogue, listen

LESSONS = dialogue.lessons()


def test_lessons_include_every_aids_module():
    assert "00" in LESSONS and "06b" in LESSONS
    assert LESSONS == sorted(LESSONS)


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_has_a_dialogue(lesson):
    assert dialogue.check_dialogue(lesson) == [], f"dialogues/lesson{lesson}.txt"
    lines = dialogue.dialogue(lesson)
    assert lines[0].speaker == "TEACHER"
    assert sum(line.speaker == "STUDENT" for line in lines) >= 5, "the student should ask, not only listen"


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_lesson_has_an_audiobook_script(lesson):
    from dpcourse import aids

    points = aids.load(lesson).KEY_POINTS
    assert 3 <= len(points) <= 6, "3 to 6 (point, analogy) pairs"
    assert all(isinstance(p, str) and isinstance(a, str) and p.strip() and a.strip() for p, a in points)
    lines = dialogue.audiobook(lesson)
    assert len(lines) == 1 + 2 * len(points) and all(line.speaker == "NARRATOR" for line in lines)
    spoken = " ".join(line.text for line in lines)
    assert not any(sym in spoken for sym in ("`", "**", "$")), "write the audiobook as it is said"


def test_malformed_dialogue_line_is_a_clear_error():
    with pytest.raises(ValueError, match="line 2: expected 'TEACHER: ...'"):
        dialogue.parse("TEACHER: hello\nPROFESSOR: hi\n", where="x.txt")
    assert dialogue.parse("# comment\n\nSTUDENT: why?\n") == [dialogue.Line("STUDENT", "why?")]


def test_lesson_names_normalise_and_refuse_nonsense():
    assert dialogue.normalise("4") == "04" and dialogue.normalise("6b") == "06b"
    with pytest.raises(ValueError, match="there is no lesson 99"):
        dialogue.normalise("99")
    with pytest.raises(ValueError, match="not a lesson number"):
        dialogue.normalise("../etc")


# --------------------------------------------------------------------------- the audio itself

HAVE_FLITE = bool(shutil.which("flite") and shutil.which("sox"))
if not HAVE_FLITE and os.environ.get("CI"):  # CI installs them (.ci/run): missing there is a failure, not a skip
    raise RuntimeError("CI must install flite and sox (see .ci/run)")
needs_flite = pytest.mark.skipif(not HAVE_FLITE, reason="needs Debian's flite and sox: apt-get install flite sox")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpcourse-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("DPCOURSE_HOME", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def built_06b(home):
    """The shortest dialogue (lesson 06b), built once with the default engine."""
    if not HAVE_FLITE:
        pytest.skip("needs Debian's flite and sox: apt-get install flite sox")
    return audio.build("06b", "dialogue")


def _tone(f0: float, rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """A buzz with fundamental ``f0`` (a pulse train through a gentle low-pass): voice-like, known pitch."""
    t = np.arange(int(rate * seconds)) / rate
    return sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)).astype(np.float32) * 0.3


@pytest.mark.parametrize("f0", [95.0, 130.0, 210.0])
def test_pitch_measure_finds_a_known_fundamental(f0):
    assert audio.median_pitch(_tone(f0), 16000) == pytest.approx(f0, rel=0.03)
    assert np.isnan(audio.median_pitch(np.zeros(16000, np.float32), 16000))


@needs_flite
def test_dialogue_audio_decodes_and_its_length_fits_the_transcript(built_06b):
    meta = built_06b
    assert Path(meta["path"]).suffix == ".ogg" and meta["engine"] == "flite"
    samples, rate = audio.decode(meta["path"])
    assert rate == audio.RATE and np.abs(samples).max() > 0.1, "silent audio"
    m = audio.measure(meta)
    assert m["duration_s"] == pytest.approx(meta["duration_s"], abs=0.1)
    assert 2.0 <= m["words_per_s"] <= 3.6, f"{m['words_per_s']} words/s is not speech at a listenable pace"
    lines = dialogue.dialogue("06b")
    assert [(t["speaker"], t["text"]) for t in meta["lines"]] == [(ln.speaker, ln.text) for ln in lines]
    starts = [t["start"] for t in meta["lines"]]
    assert starts == sorted(starts) and meta["lines"][-1]["end"] <= meta["duration_s"]
    for t in meta["lines"]:  # every line takes time in proportion to its words
        words = len(t["text"].split())
        assert 0.15 * words <= t["end"] - t["start"] <= 1.0 * words + 1.0, t
    assert m["bytes"] < 1_500_000, "a dialogue should compress to well under 1.5 MB"


@needs_flite
def test_the_two_voices_differ_in_pitch(built_06b):
    pitch = audio.measure(built_06b)["pitch_hz"]
    assert pitch["STUDENT"] > 1.3 * pitch["TEACHER"], pitch


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_espeak_voices_differ_too(tmp_path):
    lines = dialogue.dialogue("04")[:4]
    meta = audio.render(lines, tmp_path / "x.wav", "espeak-ng")
    meta["path"] = str(tmp_path / "x.wav")
    pitch = audio.measure(meta)["pitch_hz"]
    assert pitch["STUDENT"] > 1.3 * pitch["TEACHER"], pitch


@needs_flite
def test_built_audio_is_reused_and_rebuilt_when_the_text_changes(built_06b, monkeypatch):
    again = audio.build("06b", "dialogue")
    assert again["digest"] == built_06b["digest"]
    assert Path(again["path"]).stat().st_mtime == Path(built_06b["path"]).stat().st_mtime, "rebuilt needlessly"
    edited = dialogue.dialogue("06b") + [dialogue.Line("STUDENT", "One more question.")]
    monkeypatch.setattr(dialogue, "track", lambda lesson, kind="dialogue": edited)
    assert audio.built("06b", "dialogue") is None, "a changed transcript must not play stale audio"


@needs_flite
def test_audiobook_reads_each_key_point_with_its_analogy(home):
    meta = audio.build("06b", "audiobook")
    points = dialogue.audiobook("06b")
    assert [t["text"] for t in meta["lines"]] == [p.text for p in points]
    from dpcourse import aids

    for point, analogy in aids.load("06b").KEY_POINTS:
        assert any(point in p.text for p in points) and any(analogy in p.text for p in points)
    m = audio.measure(meta)
    assert 2.0 <= m["words_per_s"] <= 3.6 and not np.isnan(m["pitch_hz"]["NARRATOR"])


@needs_flite
def test_player_plays_the_built_track_and_highlights_lines(built_06b):
    import base64

    page = listen.player_html(built_06b)
    src = re.search(r"src='data:audio/ogg;base64,([^']+)'", page)
    assert src and base64.b64decode(src[1]) == Path(built_06b["path"]).read_bytes()
    assert "<audio controls" in page and "ontimeupdate=" in page and "dpl-now" in page
    assert page.count("<li data-start=") == len(built_06b["lines"])
    assert "audio built" in listen.markdown("06b").lower() or "not built" in listen.markdown("06b")


def test_without_an_engine_the_aids_show_the_transcript_and_how_to_get_audio(monkeypatch, tmp_path):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("DPCOURSE_HOME", str(tmp_path))
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    assert audio.engine() is None
    text = listen.markdown("04")
    assert "apt-get install flite sox" in text and "dpcourse audio 04" in text
    for line in dialogue.dialogue("04"):
        assert line.text in text
    tab = listen.listen_widget("04")
    html_parts = " ".join(child.value for track in tab.children for child in track.children if hasattr(child, "value"))
    assert "apt-get install flite sox" in html_parts and "<audio" not in html_parts
    assert "Make the audio" not in str(tab.children)
    from dpcourse import cli

    assert cli.main(["audio", "04"]) == 1


def test_with_an_engine_but_no_audio_the_tab_offers_to_build(monkeypatch, tmp_path):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("DPCOURSE_HOME", str(tmp_path))
    monkeypatch.setattr(audio, "engine", lambda preferred=None: "flite")
    assert "dpcourse audio 04" in listen.markdown("04") and "Audio not built yet" in listen.markdown("04")
    track = listen.listen_widget("04").children[0]
    buttons = [b for box in track.children if hasattr(box, "children") for b in box.children
               if getattr(b, "description", "") == "Make the audio"]
    assert len(buttons) == 1


def test_cli_audio_refuses_a_bad_lesson(capsys):
    from dpcourse import cli

    assert cli.main(["audio", "four"]) == 2
    assert "not a lesson number" in capsys.readouterr().out
