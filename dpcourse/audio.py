"""Speak a lesson's dialogue and audiobook with an offline engine, two voices, and measure the result.

``dpcourse audio [LESSON ...]`` builds, for each lesson, ``<home>/audio/lessonNN-dialogue.ogg`` and
``lessonNN-audiobook.ogg`` (``<home>`` is ``~/.dpcourse`` or ``$DPCOURSE_HOME``), each with a JSON file
of line timings that the Listen tab uses to highlight the line being spoken. Audio is built on the
learner's machine rather than shipped. Measured when this was written (flite, Ogg Vorbis quality 0,
16 kHz mono): dialogues of 2.6 to 4.4 minutes took 0.47 to 0.83 MB, audiobooks 0.18 to 0.35 MB, all
thirteen lessons 12.5 MB together, at 2.2 to 2.8 words per second. The repository need not carry that.

Engines, compared on the first eight lines of lesson 04's dialogue: median pitch by autocorrelation
(:func:`median_pitch`), and an offline recogniser (pocketsphinx, ``tools/listen_check.py``) as a
stand-in for a listener, scored by word error rate (lower is better):

- ``flite`` (Debian ``flite``): ``rms`` (male, about 104 Hz) 0.32, ``slt`` (female, about 168 Hz)
  0.43, ``awb`` 0.44. The most intelligible, and two clearly different voices: the default, rms as
  the teacher, slt as the student.
- ``espeak-ng``: ``en-us+m3`` / ``en-us+f3`` (about 107 / 214 Hz) 0.82 / 0.89, much more robotic.
  Used only when flite is missing.
- ``festival``: 0.36 with ``kal``, but Debian packages only that one voice, so there is no second
  voice for the student; not used.

``sox`` compresses to Ogg Vorbis and decodes for measurement; without it a track is stored as WAV
(about 8 MB a dialogue).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from dpcourse import dialogue
from dpcourse.dialogue import Line
from dpcourse.home import home

__all__ = [
    "ENGINES",
    "build",
    "built",
    "decode",
    "engine",
    "has_sox",
    "how_to_get_audio",
    "main",
    "measure",
    "median_pitch",
    "render",
]

RATE = 16000          # Hz: what flite speaks; espeak-ng's 22,050 Hz is resampled to it
GAP_S = 0.45          # silence between two turns
LEAD_S = 0.25         # silence before the first line
ENGINES = {
    "flite": {"TEACHER": ["-voice", "rms"], "STUDENT": ["-voice", "slt"], "NARRATOR": ["-voice", "rms"]},
    "espeak-ng": {"TEACHER": ["-v", "en-us+m3", "-s", "160"], "STUDENT": ["-v", "en-us+f3", "-s", "165"],
                  "NARRATOR": ["-v", "en-us+m3", "-s", "160"]},
}
APT = "apt-get install flite sox"


def engine(preferred: str | None = None) -> str | None:
    """The speech engine to use: ``preferred`` if given and installed, else flite, else espeak-ng, else None."""
    if preferred is not None:
        if preferred not in ENGINES:
            raise ValueError(f"unknown speech engine {preferred!r}: use {' or '.join(ENGINES)}")
        return preferred if shutil.which(preferred) else None
    return next((name for name in ENGINES if shutil.which(name)), None)


def has_sox() -> bool:
    return shutil.which("sox") is not None


def how_to_get_audio(lesson: str) -> str:
    """The one line that tells a learner how to get the audio of ``lesson``."""
    name = dialogue.normalise(lesson)
    if engine() is None:
        return f"No speech engine here: install one (`{APT}`), then run `dpcourse audio {name}` and re-run this cell."
    return (f"Audio not built yet: run `dpcourse audio {name}` in a terminal (about half a minute), "
            "then re-run this cell.")


# --------------------------------------------------------------------------- rendering

def _speak(text: str, speaker: str, name: str, tmp: Path) -> np.ndarray:
    """One line spoken by ``name`` in ``speaker``'s voice, as float samples at RATE."""
    out = tmp / "line.wav"
    voice = ENGINES[name][speaker]
    if name == "flite":
        cmd = ["flite", *voice, "-t", text, "-o", str(out)]
    else:
        cmd = ["espeak-ng", *voice, "-w", str(out), text]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"{name} failed on {text[:40]!r}: {result.stderr.strip()[:300]}")
    samples, rate = _read_wav(out)
    return _resample(samples, rate, RATE)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels()).mean(axis=1)
        return data, w.getframerate()


def _resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to or len(x) == 0:
        return x
    n = round(len(x) * to / rate)
    return np.interp(np.arange(n) * (rate / to), np.arange(len(x)), x).astype(np.float32)


def _write_wav(path: Path, x: np.ndarray, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def render(lines: list[Line], out: Path, engine_name: str | None = None) -> dict:
    """Speak ``lines`` into ``out`` (``.ogg`` or ``.wav``); return the metadata with each line's start and end."""
    name = engine(engine_name)
    if name is None:
        raise RuntimeError(f"no speech engine found ({' or '.join(ENGINES)}): {APT}")
    if out.suffix == ".ogg" and not has_sox():
        raise RuntimeError(f"writing {out.name} needs sox ({APT}); or ask for a .wav")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dpcourse-audio-") as tmp_name:
        tmp = Path(tmp_name)
        pieces, timings, t = [np.zeros(int(LEAD_S * RATE), np.float32)], [], LEAD_S
        for line in lines:
            speech = _speak(line.text, line.speaker, name, tmp)
            peak = float(np.abs(speech).max()) if len(speech) else 0.0
            if peak > 0:
                speech = speech * (0.7 / peak)  # the two voices at the same loudness
            timings.append({"speaker": line.speaker, "text": line.text, "start": round(t, 3),
                            "end": round(t + len(speech) / RATE, 3)})
            pieces += [speech, np.zeros(int(GAP_S * RATE), np.float32)]
            t += len(speech) / RATE + GAP_S
        whole = np.concatenate(pieces)
        wav = tmp / "whole.wav"
        _write_wav(wav, whole)
        partial = out.with_name(f".{out.name}.partial{out.suffix}")
        if out.suffix == ".ogg":
            result = subprocess.run(["sox", str(wav), "-C", "0", str(partial)], capture_output=True, text=True,
                                    check=False, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"sox could not write Ogg Vorbis: {result.stderr.strip()[:300]}")
        else:
            shutil.copyfile(wav, partial)
        os.replace(partial, out)  # a half-written track is never mistaken for a built one
    return {"engine": name, "voices": {k: " ".join(v) for k, v in ENGINES[name].items()},
            "duration_s": round(len(whole) / RATE, 3), "words": dialogue.spoken_words(lines), "lines": timings,
            "file": out.name, "bytes": out.stat().st_size}


# --------------------------------------------------------------------------- the built tracks

def _digest(lines: list[Line], name: str) -> str:
    text = json.dumps([name, ENGINES[name], GAP_S, [(line.speaker, line.text) for line in lines]])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _paths(lesson: str, kind: str) -> tuple[Path, Path]:
    folder = home() / "audio"
    stem = f"lesson{dialogue.normalise(lesson)}-{kind}"
    return folder / f"{stem}.json", folder


def built(lesson: str, kind: str = "dialogue") -> dict | None:
    """The metadata of the built ``kind`` track of ``lesson`` (with ``path``), or None when there is none
    or its text has changed since it was built."""
    meta_path, folder = _paths(lesson, kind)
    try:
        meta = json.loads(meta_path.read_text())
        audio = folder / meta["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    lines = dialogue.track(lesson, kind)
    if not audio.exists() or meta.get("digest") != _digest(lines, meta.get("engine", "")):
        return None
    return {**meta, "path": str(audio)}


def build(lesson: str, kind: str = "dialogue", engine_name: str | None = None, force: bool = False) -> dict:
    """Build (or reuse) the ``kind`` track of ``lesson``; returns its metadata."""
    existing = None if force else built(lesson, kind)
    if existing and (engine_name is None or existing["engine"] == engine_name):
        return existing
    name = engine(engine_name)
    if name is None:
        raise RuntimeError(f"no speech engine found ({engine_name or ' or '.join(ENGINES)}): {APT}")
    lines = dialogue.track(lesson, kind)
    meta_path, folder = _paths(lesson, kind)
    suffix = ".ogg" if has_sox() else ".wav"
    meta = render(lines, folder / f"{meta_path.stem}{suffix}", name)
    meta.update(lesson=dialogue.normalise(lesson), kind=kind, digest=_digest(lines, name))
    tmp = meta_path.with_name(f".{meta_path.name}.partial")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return {**meta, "path": str(folder / meta["file"])}


# --------------------------------------------------------------------------- measuring

def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """The samples of an audio file (mono float) and their rate; Ogg needs sox."""
    path = Path(path)
    if path.suffix == ".wav":
        return _read_wav(path)
    if not has_sox():
        raise RuntimeError(f"decoding {path.name} needs sox ({APT})")
    with tempfile.TemporaryDirectory(prefix="dpcourse-decode-") as tmp:
        wav = Path(tmp) / "decoded.wav"
        result = subprocess.run(["sox", str(path), "-b", "16", "-c", "1", str(wav)], capture_output=True, text=True,
                                check=False, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"sox could not decode {path.name}: {result.stderr.strip()[:300]}")
        return _read_wav(wav)


def median_pitch(x: np.ndarray, rate: int, lo: float = 60.0, hi: float = 400.0) -> float:
    """Median fundamental frequency (Hz) of the voiced parts of ``x``, by autocorrelation of 40 ms frames.

    A frame counts as voiced when it is loud (at least half the signal's RMS) and periodic (its
    autocorrelation at the best lag is at least half its energy); NaN when no frame is voiced.
    """
    n, hop = int(0.04 * rate), int(0.01 * rate)
    if len(x) < n:
        return float("nan")
    loud = 0.5 * float(np.sqrt(np.mean(x ** 2)))
    a, b = int(rate / hi), int(rate / lo)
    f0 = []
    for start in range(0, len(x) - n, hop):
        frame = x[start:start + n] - x[start:start + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < loud:
            continue
        spectrum = np.fft.rfft(frame, 2 * n)
        ac = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
        lag = a + int(np.argmax(ac[a:b]))
        if ac[0] > 0 and ac[lag] / ac[0] >= 0.5:
            f0.append(rate / lag)
    return float(np.median(f0)) if f0 else float("nan")


def measure(meta: dict) -> dict:
    """Decode a built track and measure it: duration, words per second, each speaker's median pitch."""
    x, rate = decode(meta["path"])
    pitch = {}
    for speaker in sorted({line["speaker"] for line in meta["lines"]}):
        parts = [x[int(line["start"] * rate):int(line["end"] * rate)]
                 for line in meta["lines"] if line["speaker"] == speaker]
        pitch[speaker] = round(median_pitch(np.concatenate(parts), rate), 1)
    duration = len(x) / rate
    return {"duration_s": round(duration, 2), "words": meta["words"], "words_per_s": round(meta["words"] / duration, 2),
            "pitch_hz": pitch, "bytes": Path(meta["path"]).stat().st_size}


# --------------------------------------------------------------------------- command line

def main(args: Any) -> int:
    """``dpcourse audio [LESSON ...] [--track dialogue|audiobook|both] [--engine E] [--force] [--measure]``."""
    try:
        lessons = [dialogue.normalise(x) for x in args.lessons] or dialogue.lessons()
        kinds = dialogue.TRACKS if args.track == "both" else (args.track,)
        name = engine(args.engine)
    except ValueError as e:
        print(f"dpcourse audio: {e}")
        return 2
    if name is None:
        print(f"dpcourse audio: no speech engine found ({args.engine or ' or '.join(ENGINES)}). "
              f"Install one: {APT} (Debian/Ubuntu), brew install flite sox (macOS).")
        return 1
    if not has_sox():
        print(f"note: sox is missing, so tracks are stored as WAV (about 8 MB a dialogue); "
              f"{APT} gives Ogg (under 1 MB)")
    total = 0
    for lesson in lessons:
        for kind in kinds:
            try:
                meta = build(lesson, kind, name, force=args.force)
            except (ValueError, RuntimeError) as e:
                print(f"lesson {lesson} {kind}: {e}")
                return 1
            total += meta["bytes"]
            line = (f"lesson {lesson} {kind:9s} {meta['duration_s'] / 60:4.1f} min  {meta['bytes'] / 1e6:5.2f} MB  "
                    f"{meta['engine']}  {meta['path']}")
            if args.measure:
                m = measure(meta)
                line += f"  {m['words_per_s']} words/s  pitch {m['pitch_hz']}"
            print(line, flush=True)
    print(f"{total / 1e6:.1f} MB in {home() / 'audio'}; the Listen tab of each lesson's aids plays them.")
    return 0
