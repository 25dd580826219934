"""yt-dlp in a child process, so that the download can end it whenever one of its clocks says so.

Run as a script by :mod:`cmgh.data.download.child` (``python -P <this file> <alive fd>``): it
imports nothing of cmgh, so it starts the same however the package is installed, and it serves
one request after another (yt-dlp's start-up, about half a second, is paid once per worker).
Protocol: ``ready`` once yt-dlp is imported and its URL patterns compiled; then per JSON request line ``{"url", "options"}`` on
stdin, one JSON answer line: ``{"path": <file written, or null when yt-dlp found no video>}``,
``{"error": <yt-dlp's message>}`` or ``{"crash": <anything else>}``. Answers go to the original
stdout only; anything else printed goes to stderr with yt-dlp's log lines. The worker exits when
its stdin closes (the parent is done with it) or its ``alive`` pipe does (the parent is gone).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO, Any


def _watch(fd: int) -> None:
    while os.read(fd, 1024):
        pass
    os._exit(3)


class _Log:
    """yt-dlp's messages, one line each on stderr (the parent logs them at debug level)."""

    def debug(self, msg: str) -> None:
        sys.stderr.write(" ".join(str(msg).split()) + "\n")
        sys.stderr.flush()

    info = warning = error = debug


def _download(yt_dlp: Any, url: str, options: dict[str, Any]) -> dict[str, Any]:
    try:
        with yt_dlp.YoutubeDL({**options, "logger": _Log()}) as ydl:
            info = ydl.extract_info(url, download=True)
            if info is None:
                return {"path": None}
            downloads = info.get("requested_downloads") or [{}]
            return {"path": str(downloads[0].get("filepath") or ydl.prepare_filename(info))}
    except yt_dlp.utils.YoutubeDLError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # reported, not raised: the parent records it and the worker serves on
        return {"crash": f"{exc.__class__.__name__}: {exc}"}


def _answer(out: IO[str], message: dict[str, Any] | str) -> None:
    out.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
    out.flush()


def main() -> int:
    threading.Thread(target=_watch, args=(int(sys.argv[1]),), daemon=True).start()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a stray print cannot pass for an answer
    import yt_dlp
    from yt_dlp.extractor import gen_extractor_classes

    for extractor in gen_extractor_classes():  # compiles every URL pattern now, not in the first request's time
        extractor.suitable("https://warm.up/")
    _answer(out, "ready")
    for line in sys.stdin:
        request = json.loads(line)
        _answer(out, _download(yt_dlp, request["url"], request["options"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
