"""peftsweep: models."""
