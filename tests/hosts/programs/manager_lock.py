"""A ``multiprocessing.Manager()`` lock and dict passed to ``submit()``."""

import multiprocessing

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin


def record(lock, shared, x: int) -> int:
    with lock:
        shared[x] = spin(x)
    return x


if __name__ == "__main__":
    clock = Clock()
    with multiprocessing.Manager() as manager:
        lock, shared = manager.Lock(), manager.dict()
        with pool_class()(max_workers=MAX_WORKERS) as pool:
            done = [
                f.result() for f in [pool.submit(record, lock, shared, x) for x in range(N_ITEMS)]
            ]
        stored = dict(sorted(shared.items()))
    report(elapsed_s=clock(), done=done, stored=stored)
