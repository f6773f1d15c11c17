"""Benchmark-only mitmdump script: stream every response and do nothing else.

Bare mitmdump buffers whole responses, so a server-sent-events answer reaches the
client only when it ends; exifguard streams responses.  This script gives the fair
baseline for the time-to-first-byte comparison.
"""


class StreamResponses:
    def responseheaders(self, flow):
        if flow.response is not None:
            flow.response.stream = True


addons = [StreamResponses()]
