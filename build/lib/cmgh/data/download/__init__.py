"""Real-data acquisition: annotations and clips of the five datasets, resumable, with a manifest.

``fetch`` (HTTP with resume, retries, politeness, SHA-256/MD5 checksums, the item and request
clocks), ``archives`` (safe zip/tar reading), ``checks`` (an annotation file is what its reader
accepts before it lands), ``clips`` (yt-dlp + PyAV cutting), ``child`` + ``ytdlp_worker`` (yt-dlp
in worker processes the clocks can kill), ``plan`` (which clips, where), ``manifest``
(what happened to each item), ``sources`` (the configured URLs, checked), ``steps`` (annotations,
then clips, through one bounded thread pool), ``records`` (YouTube-8M's record files from its
download plans, and the pseudo-id lookup), ``captions`` (YouTube caption files -> segments),
``autocaptions`` (a video's captions fetched with it, kept per video, assembled into caption.json)
and ``run`` (the per-dataset driver behind ``cmgh data download``). Nothing is imported here: the
workflow's config check needs only ``sources``.
"""
