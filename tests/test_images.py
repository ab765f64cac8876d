
import numpy as np
import pytest
from PIL import Image

from core.errors import ImageError
from data_prep.images import load_image
from tests.helpers import png_header_only, save, solid, truncated_jpeg


def test_png_is_pixel_exact(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = save(Image.fromarray(array), tmp_path / "a.png")
    assert np.array_equal(load_image(path, (16, 16)), array)


def test_pad_keeps_aspect_ratio_exactly(tmp_path):
    path = save(solid((10, 200, 30), (32, 16)), tmp_path / "wide.png")
    out = load_image(path, (16, 16), fit="pad")
    expected = np.zeros((16, 16, 3), np.uint8)
    expected[4:12] = (10, 200, 30)
    assert np.array_equal(out, expected)


def test_crop_fills_the_frame(tmp_path):
    im = Image.new("RGB", (48, 16), (255, 0, 0))
    im.paste((0, 0, 255), (16, 0, 32, 16))  # blue middle third
    path = save(im, tmp_path / "wide.png")
    out = load_image(path, (16, 16), fit="crop")
    assert np.array_equal(out, np.broadcast_to(np.uint8([0, 0, 255]), (16, 16, 3)))


def test_format_by_content_not_extension(tmp_path):
    path = save(solid((1, 2, 3)), tmp_path / "really_a_png.jpg", fmt="PNG")
    assert load_image(path, (16, 16))[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("fmt,ext", [("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif")])
def test_other_formats(tmp_path, fmt, ext):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    path = save(solid((255, 0, 0)), tmp_path / f"a.{ext}", fmt=fmt, **kw)
    assert load_image(path, (16, 16))[8, 8].tolist() == [255, 0, 0]


def test_exif_rotation_is_applied(tmp_path):
    im = Image.new("RGB", (32, 16), (255, 0, 0))
    im.paste((0, 0, 255), (16, 0, 32, 16))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    path = save(im, tmp_path / "rot.jpg", fmt="JPEG", exif=exif, quality=95)
    out = load_image(path, (32, 32), fit="pad")
    # displayed 16 wide x 32 tall: red on top, blue below, padded left and right
    assert out[:, :8].max() == 0 and out[:, 24:].max() == 0
    top, bottom = out[4, 16].astype(int), out[28, 16].astype(int)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 8, 16))
    out = load_image(save(im, tmp_path / "a.png"), (16, 16))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 15].tolist() == [255, 255, 255]


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 8, 16))
    im.info["transparency"] = 0
    out = load_image(save(im, tmp_path / "p.png", transparency=0), (16, 16))
    assert out[0, 0].tolist() == [0, 255, 0] and out[0, 15].tolist() == [255, 255, 255]


def test_grayscale_and_cmyk(tmp_path):
    gray = load_image(save(solid(77, mode="L"), tmp_path / "g.png"), (16, 16))
    assert gray[3, 3].tolist() == [77, 77, 77]
    cmyk = load_image(save(solid((0, 255, 255, 0), mode="CMYK"), tmp_path / "c.jpg", fmt="JPEG"), (16, 16))
    assert cmyk[8, 8, 0] > 200 and cmyk[8, 8, 1:].max() < 60  # cyan-free, magenta+yellow: red


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    array = np.full((16, 16), 32768, np.uint16)
    array[:, 8:] = 65535
    im = Image.fromarray(array)
    assert im.mode == "I;16"
    out = load_image(save(im, tmp_path / "deep.png"), (16, 16))
    assert out[0, 0].tolist() == [127, 127, 127] and out[0, 15].tolist() == [255, 255, 255]


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert load_image(path, (16, 16))[8, 8].tolist() == [255, 0, 0]


@pytest.mark.parametrize("maker,reason", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: p.write_text("not an image at all"),
     "not an image in a supported format (JPEG, PNG, GIF, BMP, WEBP)"),
    (truncated_jpeg, "corrupt image: truncated file"),
])
def test_unusable_files_raise_image_error_naming_the_file(tmp_path, maker, reason):
    path = tmp_path / "bad.jpg"
    maker(path)
    with pytest.raises(ImageError) as info:
        load_image(path, (16, 16))
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(str(path))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match=r"refused as a possible decompression bomb"):
        load_image(path, (16, 16))
    path = png_header_only(tmp_path / "bomb2.png", 10000, 7000)  # below Pillow's own limit
    with pytest.raises(ImageError, match=r"image too large \(10000x7000 pixels, limit 64,000,000\)"):
        load_image(path, (16, 16))


def test_pixel_limit_is_configurable(tmp_path):
    path = save(solid((0, 0, 0), (32, 32)), tmp_path / "a.png")
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, (16, 16), max_pixels=1000)


def test_draft_mode_matches_full_decode_closely(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((400, 400), Image.Resampling.BILINEAR)
    path = save(big, tmp_path / "big.jpg", fmt="JPEG", quality=95)
    fast = load_image(path, (64, 64), draft=True).astype(int)
    slow = load_image(path, (64, 64), draft=False).astype(int)
    assert np.abs(fast - slow).mean() < 4
