"""Listen to built dialogues with an offline recogniser and compare what it heard with the transcript.

    python tools/listen_check.py 04 06b          # needs: apt-get install pocketsphinx pocketsphinx-en-us

For each lesson it decodes the built dialogue (``dpcourse audio NN`` first), runs Debian's
``pocketsphinx_continuous`` on it, and prints the word error rate against the transcript and the
share of the transcript's words the recogniser heard. pocketsphinx's general English model is a
harsh listener of synthetic speech: it is a stand-in for a person, good for comparing engines and
voices and for catching a track that went silent or garbled, not a score of how well people follow.
It runs at about real time on a busy 2-core machine, so it is a tool, not a test.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpcourse import audio, dialogue  # noqa: E402


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def word_error_rate(ref: list[str], hyp: list[str]) -> float:
    """Edit distance between the word lists (substitutions, insertions, deletions) over len(ref)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


def heard(path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "16k.wav"
        subprocess.run(["sox", path, "-r", "16000", "-b", "16", "-c", "1", str(wav)], check=True)
        out = subprocess.run(["pocketsphinx_continuous", "-infile", str(wav)], capture_output=True, text=True,
                             check=False)
        return out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="default: every lesson with a built dialogue")
    args = parser.parse_args(argv)
    if not shutil.which("pocketsphinx_continuous"):
        print("needs pocketsphinx: apt-get install pocketsphinx pocketsphinx-en-us")
        return 1
    for lesson in [dialogue.normalise(x) for x in args.lessons] or dialogue.lessons():
        meta = audio.built(lesson, "dialogue")
        if meta is None:
            print(f"lesson {lesson}: no built dialogue (dpcourse audio {lesson})")
            continue
        ref = [w for line in dialogue.dialogue(lesson) for w in words(line.text)]
        hyp = words(heard(meta["path"]))
        recall = sum((Counter(ref) & Counter(hyp)).values()) / len(ref)
        print(f"lesson {lesson}: {meta['engine']}, {len(ref)} words, word error rate {word_error_rate(ref, hyp):.2f}, "
              f"words heard {recall:.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
