"""Content sniffing and header-only dimension checks. The name and Content-Type never count."""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
DICOM_PREFIX_LEN = 128
DICOM_MAGIC = b"DICM"

# Known formats we refuse, named in the error message (checked after PNG/JPEG/DICOM).
_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
    (b"\x7fELF", "ELF executable"),
    (b"MZ", "Windows executable"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)

# Explicit-VR codes, used to recognise a DICOM data set written without the 128-byte preamble.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)


class HeaderError(ValueError):
    """The header is malformed (the caller maps it to `corrupt_image`)."""


def sniff(data: bytes) -> str:
    """'png', 'jpeg', 'dicom' or 'dicom_raw' (no preamble), else a refused format's name."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    if data[DICOM_PREFIX_LEN : DICOM_PREFIX_LEN + 4] == DICOM_MAGIC:
        return "dicom"
    if _looks_like_raw_dicom(data):
        return "dicom_raw"
    for signature, name in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WebP"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        return "SVG"
    if head.startswith((b"<!doctype", b"<html", b"<script", b"<")):
        return "HTML"
    return "unknown"


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A data set without preamble starts with a group 0002 or 0008 element (little endian)."""
    if len(data) < 8:
        return False
    group, element = struct.unpack("<HH", data[:4])
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if data[4:6] in _VRS:
        return True
    (length,) = struct.unpack("<I", data[4:8])  # implicit VR: a plausible 32-bit length
    return length < 1024


def png_header(data: bytes) -> tuple[int, int, int, int, bool]:
    """(width, height, bit_depth, colour_type, animated) from IHDR, scanning chunks to IDAT."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise HeaderError("PNG without IHDR")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    animated = False
    offset = 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"acTL":
            animated = True
        if kind in (b"IDAT", b"IEND"):
            break
        offset += 12 + length
    return width, height, bit_depth, colour_type, animated


# Start-of-frame markers: C0 baseline, C1 extended, C2 progressive; others are lossless,
# hierarchical or arithmetic-coded JPEG, which we do not accept.
_SOF_ACCEPTED = frozenset({0xC0, 0xC1, 0xC2})
_SOF_ALL = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, precision, sof_marker) from the first start-of-frame segment."""
    width, height, precision, _components, marker = jpeg_frame_header(data)
    return width, height, precision, marker


def jpeg_frame_header(
    data: bytes, *, sof_markers: frozenset[int] = _SOF_ALL
) -> tuple[int, int, int, int, int]:
    """(width, height, precision, components, sof_marker) from the first start-of-frame segment
    whose marker is in `sof_markers` (JPEG's by default; DICOM adds JPEG-LS's 0xF7). `data`
    starts with the SOI marker; other segments are skipped by their lengths."""
    offset = 2
    size = len(data)
    while offset + 4 <= size:
        if data[offset] != 0xFF:
            raise HeaderError("JPEG marker expected")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if length < 2:
            raise HeaderError("JPEG segment length")
        if marker in sof_markers:
            if offset + 10 > size:
                break
            precision, height, width, components = struct.unpack(
                ">BHHB", data[offset + 4 : offset + 10]
            )
            return width, height, precision, components, marker
        offset += 2 + length
    raise HeaderError("JPEG without frame header")


def jpeg_marker_accepted(marker: int) -> bool:
    return marker in _SOF_ACCEPTED
