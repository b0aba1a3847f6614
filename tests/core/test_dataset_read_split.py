"""The audit's read of a part (box coordinates in two halves, on two threads, joined
again) gives the very table one reader gives, whatever the lists hold."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.dataset import BOX_COORDS, _read_columns


def _boxes_type(nullable: bool) -> pa.DataType:
    fields = [pa.field(k, pa.float32(), nullable=nullable) for k in (*BOX_COORDS, "score")]
    return pa.list_(pa.struct([*fields, pa.field("phrase", pa.string())]))


def _box(k: int) -> dict:
    # binary fractions: exact in float32, so the lists compare as Python values below
    return {"x0": 0.125, "y0": k / 64, "x1": 0.5, "y1": 0.875, "score": 1.0, "phrase": f"p{k}"}


ROWS = [
    [_box(0), _box(1)],
    None,  # a null list: read as a null again
    [],
    [_box(2), None, _box(3)],  # a null box inside a list
    [{"x0": None, "y0": 0.25, "x1": 0.5, "y1": 0.75, "score": None, "phrase": None}],
    [_box(k) for k in range(30)],
]


@pytest.mark.parametrize("row_group_size", [None, 2])
@pytest.mark.parametrize("rows", [ROWS, []], ids=["lists", "empty"])
def test_split_read_equals_one_reader(tmp_path, rows, row_group_size):
    table = pa.table(
        {
            "image_id": pa.array([f"t:{i}" for i in range(len(rows))], pa.string()),
            "boxes": pa.array(rows, _boxes_type(nullable=True)),
        }
    )
    part = tmp_path / "part-00000.parquet"
    pq.write_table(table, part, row_group_size=row_group_size)
    got = _read_columns(part, ["image_id", "boxes"], BOX_COORDS, table.column_names)

    pf = pq.ParquetFile(part)
    leaves = [c.path for c in pf.schema if c.path.rsplit(".", 1)[-1] in BOX_COORDS]
    want = pf.read(columns=["image_id", *leaves])
    assert got.schema.equals(want.schema)
    assert got.combine_chunks().equals(want.combine_chunks())
    assert got.column("boxes").to_pylist() == [
        None if r is None else [None if b is None else {k: b[k] for k in BOX_COORDS} for b in r]
        for r in rows
    ]
