"""Real-data acquisition: annotations and clips of the four datasets, resumable, with a manifest.

``fetch`` (HTTP with resume, retries, politeness, checksums), ``archives`` (safe zip/tar reading),
``clips`` (yt-dlp + PyAV cutting), ``plan`` (which clips, where), ``manifest`` (what happened to
each item), ``sources`` (the configured URLs, checked), ``steps`` (annotations, then clips) and
``run`` (the per-dataset driver behind ``cmgh data download``). Nothing is imported here: the workflow's config check needs only ``sources``.
"""
