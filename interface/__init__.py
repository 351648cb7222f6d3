"""The seam between config and code: the algorithm registry and the env factory."""
