"""IDX readers under damaged or hostile files: a corrupt deflate stream, sizes that overflow
or disagree with the file, and a small gzip that would decompress to far more than its
header says (issue 15, data readers)."""
from __future__ import annotations

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from sparsemask.data import CorruptDatasetError, read_idx


def _idx(shape, payload: bytes = b"") -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def _good_images(n=4) -> bytes:
    return _idx((n, 28, 28), np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes())


@pytest.mark.parametrize("damage", ["invalid block type", "crc"])
def test_corrupt_deflate_stream_names_the_file(tmp_path, damage):
    blob = bytearray(gzip.compress(_good_images(), compresslevel=6))
    if damage == "invalid block type":
        blob[10] = 0xFF  # first deflate byte after the 10-byte gzip header: BTYPE 11 -> zlib.error
    else:
        for i in range(20, 40):  # inside the deflate data: decodes, but to the wrong bytes
            blob[i] ^= 0xFF
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(CorruptDatasetError, match="train-images-idx3-ubyte.gz"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(2**32 - 1,) * 3, (2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 1),
                                   (65536, 65536, 65536)])
def test_overflowing_header_sizes_are_refused(tmp_path, gz, shape):
    # The first two products overflow int64 (np.prod wraps around to a small or negative number);
    # the third fits but is 2**48 bytes for a 100-byte file.
    raw = _idx(shape, b"\x01" * 64)
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(CorruptDatasetError, match=r"x-idx3-ubyte.*header"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("delta", [-1, 1])
def test_sizes_that_disagree_with_the_file(tmp_path, gz, delta):
    raw = _idx((3, 5), bytes(15 + delta))
    path = tmp_path / ("y-idx1-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(CorruptDatasetError, match=r"y-idx1-ubyte.*\(3, 5\)"):
        read_idx(path)


def test_gzip_decompression_is_bounded_by_the_header(tmp_path):
    # ~48 KB on disk, 48 MB decompressed, but the header promises 1 x 28 x 28 bytes.
    path = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_idx((1, 28, 28)))
        chunk = bytes(1 << 20)
        for _ in range(48):
            f.write(chunk)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDatasetError, match="bomb-idx3-ubyte.gz"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decompression allocated {peak} bytes for a 784-byte payload"


def test_valid_files_still_read_after_bounding(tmp_path):
    raw = _good_images(3)
    for name, blob in (("a-idx3-ubyte", raw), ("a-idx3-ubyte.gz", gzip.compress(raw))):
        (tmp_path / name).write_bytes(blob)
        out = read_idx(tmp_path / name)
        assert out.shape == (3, 28, 28) and out.tobytes() == raw[16:]
