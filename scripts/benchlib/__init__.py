"""exifguard's benchmark suite (run it with `scripts/bench`; not part of the product package).

Every claim is a ratio measured side by side in one run: the compared commands are
alternated round by round, and medians with min-max are reported, because absolute
times on a shared 2-core machine are noisy.
"""
