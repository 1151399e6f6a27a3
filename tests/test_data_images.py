"""Frame and annotation image reading: round trips and clear errors."""
import numpy as np
import pytest
from PIL import Image

from patchprune.data.images import read_image, read_index_png


def test_read_image_round_trip_and_errors(tmp_path):
    frame = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    Image.fromarray(frame).save(tmp_path / "f.png")
    assert np.array_equal(read_image(tmp_path / "f.png"), frame)
    with pytest.raises(FileNotFoundError, match="image not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt image"):
        read_image(tmp_path / "bad.jpg")


def test_read_index_png_palette_and_rgb(tmp_path):
    ids = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    pal = Image.fromarray(ids, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "p.png")
    assert np.array_equal(read_index_png(tmp_path / "p.png"), ids)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = rgb[1, 1] = (200, 10, 10)
    rgb[1, 0] = (10, 200, 10)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    got = read_index_png(tmp_path / "rgb.png")
    assert got[0, 0] == 0 and got[0, 1] == got[1, 1] != 0 and got[1, 0] not in (0, got[0, 1])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="corrupt annotation image"):
        read_index_png(tmp_path / "bad.png")
