"""Fleets: many clusters in waves, each cluster its own meshops run (a layer above the engine)."""
