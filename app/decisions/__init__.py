"""Open-time decisions: the open's context, block rules and variants, experiments, click-through."""
