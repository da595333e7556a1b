from __future__ import annotations

import io

import pytest
from PIL import Image

from ingest.images import ImageError, image_bytes, load_image


def _encoded(picture: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_load_as_rgb(fmt):
    picture = load_image(_encoded(Image.new("RGB", (30, 20), (200, 10, 10)), fmt), "car")
    assert picture.mode == "RGB" and picture.size == (30, 20)
    red, green, _ = picture.getpixel((15, 10))
    assert red > 180 and green < 40


def test_exif_orientation_is_applied():
    picture = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise
    loaded = load_image(_encoded(picture, "JPEG", exif=exif.tobytes()), "phone.jpg")
    assert loaded.size == (20, 40)


def test_transparency_grayscale_palette_and_16_bit_become_rgb():
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(_encoded(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_encoded(Image.new("L", (4, 4), 80), "PNG")).getpixel((1, 1)) == (80, 80, 80)
    palette = Image.new("RGB", (4, 4), (0, 0, 255)).convert("P")
    assert load_image(_encoded(palette, "PNG")).getpixel((0, 0)) == (0, 0, 255)
    deep = Image.new("I;16", (4, 4), 65535)
    assert load_image(_encoded(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_pixel_limit_refuses_before_decoding():
    data = _encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match=r"big\.png: 100x100 = 10,000 pixels, above the limit"):
        load_image(data, "big.png", max_pixels=5000)


def test_corrupt_truncated_missing_and_other_formats_name_the_file(tmp_path):
    jpeg = image_bytes(Image.effect_noise((200, 200), 60).convert("RGB"))
    with pytest.raises(ImageError, match=r"cut\.jpg: the JPEG data is corrupt or cut off"):
        load_image(jpeg[: len(jpeg) // 2], "cut.jpg")
    for cut in (jpeg[:20], jpeg[:100]):  # cut off inside the header
        with pytest.raises(ImageError, match=r"head\.jpg: not a JPEG, PNG or WebP image"):
            load_image(cut, "head.jpg")
    with pytest.raises(ImageError, match=r"notes\.txt: not a JPEG, PNG or WebP image"):
        load_image(b"hello", "notes.txt")
    with pytest.raises(ImageError, match=r"anim\.gif: GIF images are not accepted"):
        load_image(_encoded(Image.new("RGB", (4, 4)), "GIF"), "anim.gif")
    with pytest.raises(ImageError, match="empty"):
        load_image(b"", "zero.jpg")
    with pytest.raises(ImageError, match=r"missing\.png: no such file"):
        load_image(tmp_path / "missing.png", "missing.png")
    path = tmp_path / "ok.png"
    path.write_bytes(_encoded(Image.new("RGB", (3, 3)), "PNG"))
    assert load_image(path).size == (3, 3)
