"""Format walkers, one module per format (like Pillow's plugins).

Each module exposes:

    def scrub(data: bytes, options: ScrubOptions, findings: Findings) -> bytes

It walks the container, keeps only the allowlisted structures, neutralises the rest
(in place when `options.preserve_length`, else drops them), records each removal in
`findings`, and returns the new bytes.  It raises `ScrubError` for input it cannot
rewrite safely.  It must not decode pixels.
"""
