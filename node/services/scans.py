"""Scans of the citizen's documents: checked, downscaled and sealed to the county at intake.

The station keeps only the sealed bytes (encrypted to the county's key), so a stolen node holds
no readable scan. Pure functions, apart from Pillow.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from templates.limits import MAX_DECODE, decoded_bytes

MAX_UPLOAD = 15 * 1024 * 1024      # what an agent may attach, before downscaling
MAX_SCAN = 4 * 1024 * 1024         # what may travel, after downscaling
MAX_SIDE = 2000                    # pixels: A4 at ~170 dpi, legible for ID cards and certificates
JPEG_QUALITY = 80
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif"}
MAX_PIXELS = 40_000_000            # width x height: a 40-megapixel photo is the largest we decode
# Pillow warns past this and raises past twice this, inside Image.open; we refuse before decoding.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def N_(message: str) -> str:
    return message


TOO_MUCH_MEMORY = N_("The picture would take too much memory to open (at most 64 MB once decoded); take or "
                     "scan it at a lower resolution.")
TOO_MANY_PIXELS = N_("The picture has too many pixels (at most 40 million); take or scan it at a lower resolution.")


class ScanError(Exception):
    """A file the station cannot take as a scan; the message is a message id."""


@dataclass(frozen=True, slots=True)
class Scan:
    material: str
    name: str
    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def prepare(material: str, name: str, raw: bytes) -> Scan:
    """Turn an uploaded file into a scan: images downscaled to JPEG, PDFs as they are.

    CPU- and memory-heavy (decoding a photo): callers in async code run it in a worker thread.
    A decompression bomb (a small file that declares a huge picture) is refused from its header,
    before any pixel is decoded."""
    if not raw:
        raise ScanError(N_("The attached file is empty."))
    if len(raw) > MAX_UPLOAD:
        raise ScanError(N_("The attached file is too large (at most 15 MB)."))
    safe_name = (name or "scan").replace("/", "_").replace("\\", "_")[-100:]
    if raw.startswith(b"%PDF-"):
        if len(raw) > MAX_SCAN:
            raise ScanError(N_("The PDF is too large (at most 4 MB); scan it at a lower resolution."))
        return Scan(material, safe_name, "application/pdf", raw)
    try:
        with Image.open(io.BytesIO(raw)) as img:          # reads the header only
            if Image.MIME.get(img.format or "", "") not in IMAGE_TYPES:
                raise ScanError(N_("Attach a photo or scan (JPEG, PNG) or a PDF."))
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ScanError(TOO_MANY_PIXELS)
            small = len(raw) <= 300 * 1024 and max(img.size) <= MAX_SIDE and img.format == "JPEG"
            if small:
                return Scan(material, safe_name, "image/jpeg", raw)
            if img.format == "JPEG":            # decode at 1/2, 1/4 or 1/8 scale when that still covers MAX_SIDE
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))
            if decoded_bytes(img.size, img.mode) > MAX_DECODE:     # from the header: nothing decoded yet
                raise ScanError(TOO_MUCH_MEMORY)
            img = ImageOps.exif_transpose(img)
            img.thumbnail((MAX_SIDE, MAX_SIDE))
            out = io.BytesIO()
            img.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ScanError(TOO_MANY_PIXELS) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ScanError(N_("Attach a photo or scan (JPEG, PNG) or a PDF.")) from exc
    data = out.getvalue()
    if len(data) > MAX_SCAN:
        raise ScanError(N_("The picture is too large even after shrinking it."))
    stem = safe_name.rsplit(".", 1)[0]
    return Scan(material, stem + ".jpg", "image/jpeg", data)
