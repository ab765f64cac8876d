"""Decoding one image file into a fixed-size RGB uint8 array, whatever the file holds.

The format is detected from the content (a PNG named ``.jpg`` decodes as PNG). EXIF
orientation is applied; palette, grayscale, CMYK, 16-bit and alpha images become RGB
(alpha composited on white); animated images give their first frame. Decompression
bombs, zero-byte, truncated, corrupt and non-image files raise ``ImageError`` naming the
file, so callers can skip them with a warning.

Resizing keeps the aspect ratio. The default, ``fit="pad"``, scales the whole image into
the frame and pads the rest with black (letterboxing): nothing a user posted is cut off,
which matters for screenshots and memes whose text runs to the edges. ``fit="crop"``
fills the frame and cuts the overflow from the centre instead.

JPEGs are decoded with Pillow's draft mode, which lets libjpeg downscale by 1/2, 1/4 or
1/8 in the DCT domain while decoding, never below the target size, before the final
(antialiased) resize.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageError

#: Formats accepted, by content. (Pillow's JPEG opener also returns the multi-picture
#: "MPO" JPEGs some phones write.)
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
#: Images larger than this many pixels are refused as possible decompression bombs
#: (about 8,000 x 8,000; Pillow's own default warns at 89 million).
MAX_PIXELS = 64_000_000
FITS = ("pad", "crop")
PAD_COLOR = (0, 0, 0)
BACKGROUND = (255, 255, 255)


def load_image(
    path: str | Path,
    size: tuple[int, int] = (64, 64),
    *,
    fit: str = "pad",
    draft: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode ``path`` into a uint8 array of shape ``(height, width, 3)``.

    ``size`` is ``(height, width)``. Raises ``ImageError`` for anything unusable.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
    rgb = open_rgb(path, max(size) if draft else None, max_pixels=max_pixels)
    return fit_image(rgb, size, fit=fit)


def open_rgb(path: str | Path, draft: int | None = None, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an RGB Pillow image, EXIF orientation applied.

    ``draft`` lets a JPEG decode at a reduced scale no smaller than ``draft`` pixels a
    side (much faster for large photos). Raises ``ImageError`` for anything unusable.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
    except OSError as exc:
        raise ImageError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:
                if im.width * im.height > max_pixels:
                    raise ImageError(
                        path,
                        f"image too large ({im.width}x{im.height} pixels, limit "
                        f"{max_pixels:,}): refused as a possible decompression bomb",
                    )
                if draft and im.format in ("JPEG", "MPO"):
                    im.draft(None, (draft, draft))
                im.load()
                return to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"refused as a possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageError(path, f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated file ({reason})"
        raise ImageError(path, f"corrupt image: {reason}") from exc


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode to RGB after applying EXIF orientation; alpha goes onto white."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = _wide_gray_to_l(im)
        mode = im.mode
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, BACKGROUND)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB") if im.mode != "RGB" else im


def _wide_gray_to_l(im: Image.Image) -> Image.Image:
    """16- or 32-bit grayscale to 8-bit, scaling by the bit depth, not clipping."""
    values = np.asarray(im).astype(np.int64)
    top = 65535 if (im.mode.startswith("I;16") or values.max(initial=0) > 255) else 255
    scaled = np.clip(values, 0, top) * 255 // top
    return Image.fromarray(scaled.astype(np.uint8), "L")


def fit_image(im: Image.Image, size: tuple[int, int], *, fit: str = "pad") -> np.ndarray:
    """Resize keeping the aspect ratio into ``size`` = (height, width); pad or crop."""
    height, width = size
    target = (width, height)  # Pillow sizes are (width, height)
    if fit == "crop":
        out = ImageOps.fit(im, target, method=Image.Resampling.BILINEAR)
    else:
        out = ImageOps.pad(im, target, method=Image.Resampling.BILINEAR, color=PAD_COLOR)
    array = np.asarray(out, dtype=np.uint8)
    assert array.shape == (height, width, 3), array.shape
    return array
