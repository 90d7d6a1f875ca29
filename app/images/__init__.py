"""Image blocks: their layout, the Pillow renderer and pre-rendered fallbacks."""
