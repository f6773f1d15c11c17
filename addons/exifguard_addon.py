"""Script for `mitmdump -s addons/exifguard_addon.py` in a clone of exifguard.

It runs the package's own script, src/exifguard/proxy/mitmdump_script.py (what
`exifguard run` passes, and what `exifguard addon-path` prints for an installed copy),
so there is one script: it registers exifguard's guard, which refuses every request until
the addon is loaded and configured, and if exifguard cannot even be imported in
mitmdump's Python it refuses every request instead of letting uploads through uncleaned.
"""

import runpy
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "src" / "exifguard" / "proxy" / "mitmdump_script.py"
addons = runpy.run_path(str(_SCRIPT))["addons"]
