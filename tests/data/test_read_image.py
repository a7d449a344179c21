"""Tests of read_image: EXIF orientation, colour-mode conversion, colour order, and errors naming the file."""
import numpy as np
import pytest
from PIL import Image

from mrcnn_plugin.data import ImageReadError, SizeMismatchError, check_image_size, read_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return str(path)


def test_exif_orientation_applied(tmp_path):
    """A 40x20 (w x h) JPEG, red left / blue right, tagged orientation 6 (rotate 90 deg clockwise)
    reads as 20 wide x 40 high with red on top."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(Image.fromarray(arr), tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    rgb = read_image(path, format="RGB")
    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    top, bottom = rgb[5, 10].astype(int), rgb[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60        # red
    assert bottom[2] > 200 and bottom[0] < 60  # blue
    bgr = read_image(path, format="BGR")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])


def test_grayscale_rgba_palette_convert(tmp_path):
    """'L' -> three equal channels (or HxWx1 for format 'L'); RGBA drops alpha; palette looks up its colours."""
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = _save(Image.fromarray(gray), tmp_path / "gray.png")
    rgb = read_image(path, format="RGB")
    assert rgb.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    np.testing.assert_array_equal(read_image(path, format="L")[:, :, 0], gray)

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0   # fully transparent
    out = read_image(_save(Image.fromarray(rgba), tmp_path / "rgba.png"), format="BGR")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 20, 10])

    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    out = read_image(_save(pal, tmp_path / "palette.png"), format="RGB")
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])


def test_16bit_and_cmyk_convert(tmp_path):
    """16-bit grayscale is scaled to 8 bits (65535 -> 255, 25700 -> 100); CMYK cyan reads as RGB (0, 255, 255)."""
    g16 = np.array([[0, 65535], [25700, 257]], dtype=np.uint16)
    path = _save(Image.fromarray(g16), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    out = read_image(path, format="RGB")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [100, 1]])

    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))
    out = read_image(_save(cmyk, tmp_path / "cmyk.tif"), format="RGB")
    np.testing.assert_array_equal(out[0, 0], [0, 255, 255])


def test_unreadable_files_raise_naming_the_file(tmp_path):
    """Zero-byte, truncated and text-named-.jpg files raise ImageReadError (an OSError) naming the
    file; a missing one FileNotFoundError."""
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    rng = np.random.default_rng(0)
    full = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "full.jpg")
    truncated = tmp_path / "truncated.jpg"
    data = open(full, "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (empty, text, truncated):
        with pytest.raises(ImageReadError, match=path.name) as info:
            read_image(str(path))
        assert isinstance(info.value, OSError)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(str(tmp_path / "missing.jpg"))


def test_check_image_size():
    """check_image_size accepts a matching record, fills missing sizes, and names the file on a mismatch."""
    img = np.zeros((5, 7, 3), np.uint8)
    record = {"file_name": "x.jpg"}
    check_image_size(record, img)
    assert (record["height"], record["width"]) == (5, 7)
    with pytest.raises(SizeMismatchError, match="x.jpg"):
        check_image_size({"file_name": "x.jpg", "height": 7, "width": 5}, img)
