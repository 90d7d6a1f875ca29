"""Countdown timers: deadline arithmetic and GIF frames, ``countdown`` blocks, and render jobs."""
