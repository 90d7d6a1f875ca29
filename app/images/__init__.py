"""Dynamic images at open time: ``image`` blocks, their renderer, content service and fetch classes."""
