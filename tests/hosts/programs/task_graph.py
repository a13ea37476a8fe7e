"""A task-graph library using the pool as its process pool: dask's multiprocessing scheduler
given the executor (``pool=``), one ``submit()`` per task, 100 tasks whose sums depend on
them."""

import dask
from _host import MAX_WORKERS, Clock, pool_class, report, spin


@dask.delayed
def work(x: int) -> int:
    return spin(x)


@dask.delayed
def total(values: list[int]) -> int:
    return sum(values)


if __name__ == "__main__":
    graph = [total([work(10 * k + i) for i in range(10)]) for k in range(10)]
    clock = Clock()
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        totals = list(dask.compute(*graph, scheduler="processes", pool=pool))
    report(elapsed_s=clock(), totals=totals)
