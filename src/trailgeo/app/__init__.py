"""Application layer: settings, dependency wiring and the detection run."""
