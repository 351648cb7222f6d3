"""Benchmark and search scripts: each prints its measurements beside the peer it is compared with."""
