"""The catalog: a dataset's name on the command line -> its source.

``digits``, ``digits-placed`` and ``digit-scenes`` are embedded; ``vtab:NAME`` and
``avg5:NAME`` are the paper's transfer tasks (their splits and labels, on TFDS);
``folder:PATH`` (or an existing directory) is an image folder, with masks/ a segmentation
folder, and so is a path (see TFDS_NAME); anything else is a TFDS name[/config][:version].
A new dataset kind is its source module plus a line here. (One kind is named by two paths
and read by one evaluator: ImageNet's validation files with ReaL's real.json,
`real_folder.py`, which the `real` evaluator opens from its `data` and `real_json`.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mixer_cli.core.errors import DataError
from mixer_cli.data.sources import DataSource

TRANSFER_PREFIXES = ("vtab", "avg5")  # vtab:NAME, avg5:NAME: a transfer task (transfer_tasks.py)

# What is read as a TFDS name[/config][:version] (TFDS itself judges the rest) rather than
# a folder's path: no leading '/', '.' or '~', at most one '/'.
TFDS_NAME = re.compile(r"[^/.~][^/]*(/[^/]*)?$")


def open_dataset(
    spec: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    task: str | None = "classify",
    skip_corrupt: bool = False,
) -> DataSource:
    """``digits``, ``digit-scenes``, ``vtab:NAME``, ``avg5:NAME``, ``folder:PATH`` (or an
    existing directory), or a TFDS name[/config][:version]; `task` says whether labels are
    classes or masks (``segment``: a folder of images/ and masks/, or a TFDS set whose masks
    mixer knows; None: what the dataset holds, a folder by its layout, for describing it).
    `skip_corrupt`: an image folder leaves damaged files out (with a warning) instead of
    refusing them."""
    spec = spec.strip()
    if task is None:
        root = Path(spec.removeprefix("folder:")).expanduser()
        layout = root.is_dir() and any((d / "masks").is_dir() for d in root.iterdir())
        task = "segment" if spec == "digit-scenes" or layout else "classify"
    if spec in ("digits", "digits-placed"):
        if task == "segment":
            raise DataError(f"{spec} has no masks; the offline segmentation set is digit-scenes")
        if spec == "digits":
            from mixer_cli.data.digits import DigitsSource

            return DigitsSource()
        from mixer_cli.data.digits_placed import DigitsPlacedSource

        return DigitsPlacedSource()
    if spec == "digit-scenes":
        if task != "segment":
            raise DataError(
                "digit-scenes is a segmentation set (masks for labels): use it with mixer segment"
            )
        from mixer_cli.data.digit_scenes import DigitScenesSource

        return DigitScenesSource()
    if spec.partition(":")[0] in TRANSFER_PREFIXES:
        if task == "segment":
            raise DataError(f"{spec} is a classification task; it has no masks")
        from mixer_cli.data.transfer_source import open_transfer

        return open_transfer(spec, data_dir, download=download, skip_corrupt=skip_corrupt)
    if spec.startswith("folder:") or Path(spec).expanduser().is_dir() or not TFDS_NAME.match(spec):
        root = Path(spec.removeprefix("folder:")).expanduser()
        if task == "segment":
            from mixer_cli.data.mask_folder import MaskFolderSource

            return MaskFolderSource(root)
        from mixer_cli.data.folder import FolderSource

        return FolderSource(root, skip_corrupt)
    from mixer_cli.data.tfds_source import open_tfds

    return open_tfds(spec, data_dir, download=download, task=task)
