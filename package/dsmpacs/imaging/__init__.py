"""Pixel access and rendering for the viewer, thumbnails and DICOMweb.

frames.py reads one frame's stored bytes by file offset; render.py decodes one
frame and turns it into PNG or JPEG (window/level, DSA subtraction). Nothing
here knows about HTTP or the index: callers pass file paths.
"""
