"""Pixels, and the only package that imports Pillow: image block layouts, their renderer, countdown frames."""
