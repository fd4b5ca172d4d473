"""Decode the stored bytes of ONE frame (from frames.read_frame) to a numpy array.

pydicom's decoders do the work: its native decoder for uncompressed data
(1-bit unpacking, YBR 4:2:2, planar configuration, big endian) and, for
compressed data, whichever plugin is installed (gdcm, pylibjpeg-openjpeg,
pylibjpeg-rle, pyjpegls). The frame is wrapped as a one-frame source so a
300-frame run never has to be decoded to show one frame.
"""
from __future__ import annotations

import numpy as np
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dsmpacs.imaging.frames import PixelLayout

__all__ = ["decode_frame", "DecodeError"]


class DecodeError(ValueError):
    """No installed decoder could turn this frame into pixels."""


def decode_frame(layout: PixelLayout, data: bytes, *, rgb: bool = True) -> np.ndarray:
    """Pixels of one frame: (rows, columns) for one sample, (rows, columns, samples)
    otherwise. With ``rgb`` YBR_FULL/YBR_FULL_422 are converted to RGB."""
    syntax = UID(layout.transfer_syntax_uid)
    if syntax == DeflatedExplicitVRLittleEndian:
        syntax = UID(ExplicitVRLittleEndian)        # frames.read_frame already inflated it
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise DecodeError(f"no decoder for transfer syntax {syntax}") from exc
    if not decoder.is_available:
        raise DecodeError(f"no installed plugin decodes {syntax.name}")
    source = encapsulate([data]) if layout.encapsulated else data
    options = dict(
        rows=layout.rows, columns=layout.columns, samples_per_pixel=layout.samples_per_pixel,
        bits_allocated=layout.bits_allocated, bits_stored=layout.bits_stored,
        pixel_representation=layout.pixel_representation,
        photometric_interpretation=layout.photometric_interpretation,
        planar_configuration=layout.planar_configuration, number_of_frames=1,
        pixel_keyword="PixelData",
    )
    try:
        array, _meta = decoder.as_array(source, index=0, raw=not rgb, **options)
    except Exception as exc:   # plugins raise anything from RuntimeError to their own types
        raise DecodeError(f"{syntax.name}: {exc}") from exc
    return array
