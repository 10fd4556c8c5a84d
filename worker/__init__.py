"""pkbs.worker."""
