"""scripts/loadtest: the full-size load test through the real proxy (see tests/proxy/faultharness.py)."""
