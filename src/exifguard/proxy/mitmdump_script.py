"""Script for `mitmdump -s <this file>` (what `exifguard run` passes).

It lives inside the package so an installed exifguard can find it; the repository's
addons/exifguard_addon.py is the same script for people who run mitmdump by hand.
`install()` also registers exifguard's guard, which refuses every request until the
addon is loaded and configured; if exifguard cannot be imported at all, the fallback
below refuses every request instead of letting uploads through uncleaned.
"""

try:
    from exifguard.proxy.guard import install
except Exception as _exc:  # noqa: BLE001 - fail closed, loudly
    import logging

    from mitmproxy import http

    _REASON = f"exifguard could not be imported in this mitmdump ({type(_exc).__name__}: {_exc})"[:400]

    class ExifguardFailedToLoad:
        """Answer every request with 503: without exifguard nothing may pass."""

        name = "exifguard_failed_to_load"

        def running(self) -> None:
            bar = "!" * 76
            logging.getLogger("exifguard").error(
                f"{bar}\nexifguard FAILED TO LOAD: every request through this proxy is refused\n"
                f"  - {_REASON}\n{bar}")

        def requestheaders(self, flow: http.HTTPFlow) -> None:
            if flow.response is None:
                flow.response = http.Response.make(
                    503, f"exifguard is not active in this proxy, so this request was refused and "
                         f"nothing was sent: {_REASON}.\n", {"content-type": "text/plain; charset=utf-8"})

    addons = [ExifguardFailedToLoad()]
else:
    addons = install()
