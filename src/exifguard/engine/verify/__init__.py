"""Independent output checkers, one module per format.

Each module exposes:

    def verify(clean: bytes, options: ScrubOptions) -> None

and raises `ScrubError` with a short reason if the output holds anything but
allowlisted structures and neutral padding, or anything meaningful after the end of
the image.  A verifier must not import from `exifguard.engine.formats`: it is a second,
separately written walk, so a bug in a writer is caught rather than repeated.
"""
