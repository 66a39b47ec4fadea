"""Ways files get damaged on real disks, applied on purpose."""

from __future__ import annotations

import zipfile
from pathlib import Path


def flip_npz_array_bit(source: str | Path, target: Path) -> Path:
    """A copy of an .npz with one bit flipped inside its largest array's data."""
    data = bytearray(Path(source).read_bytes())
    with zipfile.ZipFile(source) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    # Data follows a 30-byte local header, the member's name and its extra field.
    offset = member.header_offset
    name_length = int.from_bytes(data[offset + 26 : offset + 28], "little")
    extra_length = int.from_bytes(data[offset + 28 : offset + 30], "little")
    data[offset + 30 + name_length + extra_length + member.compress_size - 1] ^= 0x08
    target.write_bytes(bytes(data))
    return target


def truncate(source: str | Path, target: Path) -> Path:
    """A copy cut to half its length."""
    data = Path(source).read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def truncate_arrays(step_dir: Path) -> None:
    """Cut every array data file of an orbax checkpoint step to its first 64 bytes."""
    for path in (step_dir / "state").rglob("d/*"):
        path.write_bytes(path.read_bytes()[:64])


def flip_bit_in_largest_file(directory: Path) -> None:
    """Flip one bit in the middle of the largest file under `directory`."""
    path = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def damage_inside(path: Path) -> Path:
    """Invert the byte in the middle of a file: its header and end stay intact (what a
    check of a file's size, header and end cannot see; decoding fails)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path
