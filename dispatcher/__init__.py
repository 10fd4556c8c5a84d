"""pkbs.dispatcher."""
