"""The Listen tab of a lesson's aids: a player with its transcript, or the transcript and how to get audio.

Three situations, each shown honestly:

- the track is built (``dpcourse audio NN``): an HTML5 player and the transcript; while it plays, the
  line being spoken is highlighted (a ``timeupdate`` handler on the ``<audio>`` element, so it works
  wherever the front end runs the output's HTML: JupyterLab, Notebook, VS Code, an exported page), and
  clicking a line jumps to it;
- an engine is installed but the track is not built: the transcript and a button that builds it;
- no engine: the transcript and one line that says how to get audio.

Headless (nbval, nbconvert) the aids are markdown: :func:`markdown` gives the same transcript, folded.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from dpcourse import audio, dialogue

__all__ = ["listen_widget", "markdown", "player_html", "transcript_html"]

LABELS = {"dialogue": "Dialogue: a student and a teacher talk the lesson through",
          "audiobook": "Audiobook: the key points, each with an analogy"}
MIME = {".ogg": "audio/ogg", ".wav": "audio/wav"}

# Highlights the <li> whose [start, end) holds the current time; clicking a line seeks to it.
_ON_TIME = ("var t=this.currentTime;this.parentNode.querySelectorAll('li[data-start]').forEach(function(li){"
            "var on=t>=+li.dataset.start&&t<+li.dataset.end;if(on&&!li.classList.contains('dpl-now'))"
            "li.scrollIntoView({block:'nearest'});li.classList.toggle('dpl-now',on)})")
_ON_CLICK = ("var li=event.target.closest('li[data-start]');if(li){var a=this.parentNode.querySelector('audio');"
             "a.currentTime=+li.dataset.start;a.play()}")
_STYLE = ("<style>.dpl-transcript{max-height:18em;overflow-y:auto;padding-left:1.6em;cursor:pointer}"
          ".dpl-transcript li{margin:.2em 0;padding:.1em .3em;border-radius:3px}"
          ".dpl-transcript li.dpl-now{background:#ffe680;color:#000}</style>")


def _speaker(name: str) -> str:
    return name.capitalize()


def transcript_html(lines: list[dict] | list[dialogue.Line], timed: bool) -> str:
    """The transcript as an ordered list; with ``timed`` each line carries its start and end time."""
    items = []
    for line in lines:
        speaker, text = (line["speaker"], line["text"]) if isinstance(line, dict) else (line.speaker, line.text)
        when = f" data-start='{line['start']}' data-end='{line['end']}'" if timed else ""
        who = "" if speaker == "NARRATOR" else f"<b>{_speaker(speaker)}:</b> "
        items.append(f"<li{when}>{who}{html.escape(text)}</li>")
    return f"<ol class='dpl-transcript' onclick=\"{_ON_CLICK if timed else ''}\">{''.join(items)}</ol>"


def player_html(meta: dict) -> str:
    """A player for a built track (its audio inline, so every front end can play it) and its timed transcript."""
    path = Path(meta["path"])
    data = base64.b64encode(path.read_bytes()).decode()
    minutes = meta["duration_s"] / 60
    return (f"{_STYLE}<div class='dpl-listen'><p><b>{html.escape(LABELS[meta['kind']])}</b> "
            f"({minutes:.1f} min, {html.escape(meta['engine'])})</p>"
            f"<audio controls preload='metadata' style='width:95%' ontimeupdate=\"{_ON_TIME}\" "
            f"src='data:{MIME.get(path.suffix, 'audio/ogg')};base64,{data}'></audio>"
            f"{transcript_html(meta['lines'], timed=True)}</div>")


def markdown(lesson: str) -> str:
    """The Listen section of the static aids: state of the audio in one line, then both transcripts, folded."""
    name = dialogue.normalise(lesson)
    parts = ["### Listen"]
    built = {kind: audio.built(name, kind) for kind in dialogue.TRACKS}
    if all(built.values()):
        d = built["dialogue"]
        parts.append(f"Audio built ({d['duration_s'] / 60:.1f} min dialogue, {d['engine']}): {d['path']}. "
                     "Open this notebook in JupyterLab for the player, or play the file in any audio player.")
    else:
        parts.append(audio.how_to_get_audio(name))
    try:
        lines = dialogue.dialogue(name)
        body = "\n\n".join(f"**{_speaker(ln.speaker)}:** {ln.text}" for ln in lines)
        parts.append(f"<details><summary>{LABELS['dialogue']} (transcript)</summary>\n\n{body}\n\n</details>")
    except ValueError as e:
        parts.append(f"(dialogue: {e})")
    from dpcourse import aids

    points = getattr(aids.load(name), "KEY_POINTS", [])
    if points:
        body = "\n".join(f"{i}. {point}  \n   *{analogy}*" for i, (point, analogy) in enumerate(points, 1))
        parts.append(f"<details><summary>{LABELS['audiobook']} (transcript)</summary>\n\n{body}\n\n</details>")
    return "\n\n".join(parts)


def _track_widget(lesson: str, kind: str) -> Any:
    import ipywidgets as w

    box = w.VBox()
    meta = audio.built(lesson, kind)
    if meta is not None:
        box.children = [w.HTML(player_html(meta))]
        return box
    try:
        lines = dialogue.track(lesson, kind)
    except ValueError as e:
        box.children = [w.HTML(html.escape(str(e)))]
        return box
    heading = w.HTML(f"{_STYLE}<p><b>{html.escape(LABELS[kind])}</b></p>")
    transcript = w.HTML(transcript_html(lines, timed=False))
    if audio.engine() is None:
        box.children = [heading, w.HTML(f"<i>{html.escape(audio.how_to_get_audio(lesson))}</i>"), transcript]
        return box
    button = w.Button(description="Make the audio", tooltip=f"dpcourse audio {lesson} (about half a minute)")
    status = w.HTML()

    def make(_: Any) -> None:
        button.disabled = True
        status.value = "<i>speaking the lines...</i>"
        try:
            built = audio.build(lesson, kind)
        except (RuntimeError, ValueError, OSError) as e:
            status.value = f"<span style='color:firebrick'>{html.escape(str(e))}</span>"
            button.disabled = False
            return
        box.children = [w.HTML(player_html(built))]

    button.on_click(make)
    box.children = [heading, w.HBox([button, status]), transcript]
    return box


def listen_widget(lesson: str) -> Any:
    """The Listen tab: the dialogue, then the audiobook."""
    import ipywidgets as w

    name = dialogue.normalise(lesson)
    return w.VBox([_track_widget(name, kind) for kind in dialogue.TRACKS])
