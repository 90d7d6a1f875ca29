"""Campaigns: blocks.toml, form blocks, send-time rendering, minted URLs, preview, AMP validator."""
