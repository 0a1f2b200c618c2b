"""peftsweep: search."""
