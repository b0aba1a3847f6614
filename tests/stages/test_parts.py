"""``map_parts``: one call per records part, results in part order, here, on a local
dask scheduler and on a cluster at a ``tcp://`` address (the way ``--scheduler``
reaches one); a bad scheduler is one clear line."""

import pytest

from pipeline.core.errors import UserError
from pipeline.stages.parts import map_parts


def _square(k: int) -> int:
    return k * k


@pytest.mark.parametrize("scheduler", [None, "synchronous", "threads"])
def test_results_in_order(scheduler):
    args = [(k,) for k in range(11)]  # more than one local window (2 x cores)
    assert list(map_parts(_square, args, scheduler)) == [k * k for k in range(11)]


def test_bad_scheduler_is_a_user_error():
    with pytest.raises(UserError, match="--scheduler must be"):
        list(map_parts(_square, [(1,)], "nonsense"))


def test_curate_on_a_tcp_cluster_equals_in_process(tmp_path):
    """A real scheduler and worker on tcp://127.0.0.1 (threads of this process, so the
    test needs no spawn): the same curated dataset as in process."""
    distributed = pytest.importorskip("dask.distributed")
    from pipeline.core.dataset import read_dataset
    from pipeline.stages.curate import curate
    from tests.dataset_factory import random_dataset

    a = random_dataset(tmp_path / "a", "s", 30, 1, max_boxes_per_image=8)
    b = random_dataset(tmp_path / "b", "s", 20, 2, max_boxes_per_image=8)
    curate([a, b], tmp_path / "here", hash_images=False)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        curate([a, b], tmp_path / "there", hash_images=False, scheduler=cluster.scheduler_address)
    here, there = read_dataset(tmp_path / "here"), read_dataset(tmp_path / "there")
    assert there.records.equals(here.records) and there.rejects.equals(here.rejects)
