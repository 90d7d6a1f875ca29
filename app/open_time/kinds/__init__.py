"""One module per open-time kind: what it renders, its fallback and its cache policy."""
