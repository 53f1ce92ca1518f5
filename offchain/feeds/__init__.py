"""Price sources (simulated markets, historical replay) and the price service that posts them."""
