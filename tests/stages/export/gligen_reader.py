"""GLIGEN's own TSV reading, reimplemented line for line for the tests.

GLIGEN's ``dataset/tsv.py`` (``TSVFile``, ``generate_lineidx``) and
``dataset/tsv_dataset.py`` (``decode_tensor_from_string``) cannot be imported here (they
need GLIGEN's repository and a ``projection_matrix`` file), so this copies the parts a
reader goes through: the TSV is opened in *text* mode and each row is reached by
``seek`` to its ``.lineidx`` offset, then ``readline().split('\\t')`` with ``strip``.

What GLIGEN does without a ``.lineidx``: ``TSVFile(path)``, as ``TSVDataset`` calls it,
has ``if_generate_lineidx=False``, so its first read fails opening the missing index
(``FileNotFoundError``); ``TSVFile(path, if_generate_lineidx=True)`` rebuilds the index
from the TSV with ``generate_lineidx`` below. A TSV without its index is therefore
refused or rebuilt, never read with another file's offsets.
"""

from __future__ import annotations

import base64
import os
import os.path as op

import numpy as np


def generate_lineidx(filein: str, idxout: str) -> None:  # GLIGEN's dataset/tsv.py
    idxout_tmp = f"{idxout}.tmp"
    with open(filein) as tsvin, open(idxout_tmp, "w") as tsvout:
        fsize = os.fstat(tsvin.fileno()).st_size
        fpos = 0
        while fpos != fsize:
            tsvout.write(str(fpos) + "\n")
            tsvin.readline()
            fpos = tsvin.tell()
    os.rename(idxout_tmp, idxout)


class TSVFile:
    """GLIGEN's ``TSVFile`` without its blob-storage, linelist and chunk options."""

    def __init__(self, tsv_file, if_generate_lineidx: bool = False):
        self.tsv_file = str(tsv_file)
        self.lineidx = f"{op.splitext(self.tsv_file)[0]}.lineidx"
        self._fp = None
        self._lineidx = None
        if not op.isfile(self.lineidx) and if_generate_lineidx:
            generate_lineidx(self.tsv_file, self.lineidx)

    def _ensure_lineidx_loaded(self):
        if self._lineidx is None:
            with open(self.lineidx) as fp:
                self._lineidx = [int(line.strip()) for line in fp]

    def __len__(self):
        self._ensure_lineidx_loaded()
        return len(self._lineidx)

    def __getitem__(self, idx: int):
        self._ensure_lineidx_loaded()
        if self._fp is None:
            self._fp = open(self.tsv_file)  # noqa: SIM115 - kept open, as GLIGEN does
        self._fp.seek(self._lineidx[idx])
        return [s.strip() for s in self._fp.readline().split("\t")]

    def close(self):
        if self._fp is not None:
            self._fp.close()


def read_rows(path, if_generate_lineidx: bool = False) -> list[tuple[str, str]]:
    """Every (key, item) row as GLIGEN's TSVDataset gets them (``tsv_file[index]``)."""
    tsv = TSVFile(path, if_generate_lineidx)
    try:
        return [tuple(tsv[i]) for i in range(len(tsv))]
    finally:
        tsv.close()


def decode_tensor_from_string(arr_str):  # GLIGEN's dataset/tsv_dataset.py (NumPy half)
    return np.frombuffer(base64.b64decode(arr_str), dtype="float32")
