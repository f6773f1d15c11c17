"""exifguard's fuzzer (scripts/fuzz): structure-aware mutation of images and request bodies,
checked against the fail-closed invariants.  See README.md in this folder."""
