"""Damaged image files found before they are read, from each file's size, header and end.

A truncated JPEG or a zero-byte file otherwise stops a run part-way with TensorFlow's
internal error, which names no file. Reading a file's first and last bytes finds what
decoding would trip on (no data, an unknown format, a JPEG without its end marker, a PNG
without its IEND chunk, a GIF without its trailer, a BMP shorter than its header says)
at a fraction of a decode's cost, on many files at once. Where the files are few (a
user's own images for `mixer predict`) a full decode also finds damage inside a file
whose header and end are intact. Segmentation masks also have their PNG header read:
TensorFlow scales a 1-, 2-, 4- or 16-bit PNG's values and reads a palette PNG's colours,
so such a mask would silently mean other classes than Pillow shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

TAIL = 4096  # JPEG end markers may be followed by padding or a camera's trailer
WORKERS = 4  # overlaps waits on cold or network storage; warm, the GIL bounds it
PNG = b"\x89PNG\r\n\x1a\n"
MASK_FORMAT = "masks are 8-bit grayscale PNGs of class indices (255: ignore)"
# A PNG's colour types (the IHDR byte after its bit depth) that are no grayscale mask.
_COLOUR_TYPES = {
    2: "an RGB PNG (3 channels)",
    3: "a palette PNG (TensorFlow reads its colours, not its indices)",
    4: "a grayscale PNG with alpha (2 channels)",
    6: "an RGBA PNG (4 channels)",
}


def damage(path: str) -> str | None:
    """Why the file at `path` cannot be a whole image, or None if it looks whole."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, 16, 0)
            tail = os.pread(fd, TAIL, max(0, size - TAIL))
        finally:
            os.close(fd)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail else "a truncated JPEG (no end marker)"
    if head.startswith(PNG):
        return None if b"IEND" in tail[-16:] else "a truncated PNG (no IEND chunk)"
    if head.startswith(b"GIF8"):
        return None if tail.rstrip(b"\x00").endswith(b";") else "a truncated GIF (no trailer)"
    if head.startswith(b"BM"):
        declared = int.from_bytes(head[2:6], "little")
        return None if size >= declared else f"a truncated BMP ({size} of {declared} bytes)"
    return "not a JPEG, PNG, GIF or BMP image"


def undecodable(path: str) -> str | None:
    """`damage`, then a full decode as the input pipeline does it (the damage a file's
    header and end do not show): why the file cannot be read, or None."""
    why = damage(path)
    if why is not None:
        return why
    from mixer_cli.core.tf_cpu import op_error_line, tf

    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as err:
        return f"cannot be decoded ({op_error_line(err)})"
    return None


def listing(damaged: Sequence[tuple[str, str]], shown: int = 3) -> str:
    """'PATH' (why), ... for the first `shown` of (path, why) pairs, "and N more" after."""
    first = ", ".join(f"{path!r} ({why})" for path, why in damaged[:shown])
    return first + (f" and {len(damaged) - shown} more" if len(damaged) > shown else "")


def mask_damage(path: str) -> str | None:
    """`damage`, then what in a mask's PNG header makes TensorFlow read other values than
    those stored (None: a whole 8-bit grayscale PNG)."""
    why = damage(path)
    if why is not None:
        return why
    with open(path, "rb") as file:
        head = file.read(26)  # signature, IHDR's length and type, width, height, depth, colour
    if not head.startswith(PNG) or len(head) < 26:
        return f"not a PNG; {MASK_FORMAT}"
    depth, colour = head[24], head[25]
    if colour in _COLOUR_TYPES:
        return f"{_COLOUR_TYPES[colour]}; {MASK_FORMAT}"
    if depth != 8:
        one = round(255 / (2**depth - 1))  # what TensorFlow's 8-bit decode makes of a 1
        return f"a {depth}-bit PNG (TensorFlow reads its 1 as {one}); {MASK_FORMAT}"
    return None


def find_damaged(
    paths: Sequence[str], check: Callable[[str], str | None] = damage
) -> list[tuple[str, str]]:
    """(path, why) of every file that `check` (default: `damage`) refuses, in the given
    order."""
    with ThreadPoolExecutor(WORKERS) as pool:
        verdicts = list(pool.map(check, paths, chunksize=256))
    return [(p, why) for p, why in zip(paths, verdicts, strict=True) if why is not None]
