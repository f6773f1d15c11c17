"""scripts/fetch-corpus: download the real-image test corpus from its public sources.

The corpus (real photos with real metadata, published by other projects' test suites) is
never committed here: only where each file comes from (repository, path, pinned commit)
and its sha256.  `sources` reads that list, `fetch` downloads and verifies each file,
`describe` rebuilds the manifest.json/exiftool_g1.json the tests read, from the fetched
bytes and ExifTool, on the newcomer's own machine (see README.md next to this file).

Standard library only for fetching, so it runs before the project's venv exists; the
description step uses Pillow when it is importable.
"""
