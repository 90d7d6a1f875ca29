"""Exposures and reports: what opens and clicks showed (``recorder``), counted per hour in the store,
and the report built from those counters (``stats``, ``report``, ``table``; its PNG chart is
``app.images.report_chart``, with the rest of the Pillow code)."""
