"""ITU-T T.4 / T.6 facsimile coding: MH, MR and MMR encoder and decoder for 1-bit page arrays.

What it does
------------
The public face of the codecs used by both fax transports (T.30 over G.711 and T.38):

* ``encode(page, compression="mh" | "mr" | "mmr", ...) -> bytes`` (``ums.fax.t4_encode``);
* ``decode(data, width=..., compression=...) -> DecodeResult`` and the streaming ``Decoder``
  (``ums.fax.t4_decode``), which replace bad rows like a fax machine and count them;
* ``TIFF_FILL_ORDER`` and ``tiff_t4_options`` to describe the data in TIFF tags (Compression 3/4,
  T4Options 292, FillOrder 266) when it is stored or handed to libtiff.

Pages are ``H x W`` numpy arrays, 1 (non-zero) = black, any width (T.4 page widths 1728, 2048, 2432
pels and their R16 doubles 3456, 4096, 4864).  Data is in line order by default, first transmitted
bit in the least significant bit of each byte (TIFF FillOrder 2); ``msb_first=True`` selects
FillOrder 1.

How it works
------------
See the two implementation modules: the encoder is vectorised over the whole page with numpy, the
decoder is a table-driven loop over code words with EOL positions located by numpy.
"""

from __future__ import annotations

from ums.fax.t4_decode import Decoder, DecodeResult, decode
from ums.fax.t4_encode import Compression, encode

__all__ = [
    "Compression",
    "DecodeResult",
    "Decoder",
    "decode",
    "encode",
    "tiff_compression",
    "tiff_t4_options",
]


def tiff_compression(compression: Compression) -> int:
    """TIFF Compression tag (259) value: 3 (CCITT T.4) for mh/mr, 4 (CCITT T.6) for mmr."""
    return 4 if compression == "mmr" else 3


def tiff_t4_options(compression: Compression, *, eol_align: bool = False) -> int:
    """TIFF T4Options tag (292): bit 0 = two-dimensional coding, bit 2 = EOLs byte-aligned."""
    return (1 if compression == "mr" else 0) | (4 if eol_align else 0)
