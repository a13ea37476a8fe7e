"""A script that imported numpy (whose BLAS starts threads) and then uses the pool; reports
when the first parallel result of the fresh pool arrived."""

import numpy as np
from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin


def norm_of(x: int) -> float:
    spin(x)
    return float(np.linalg.norm(np.arange(x + 1, dtype=float)))


if __name__ == "__main__":
    a = np.ones((300, 300))
    float((a @ a).sum())  # the BLAS threads are running now
    clock = Clock()
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        first = pool.submit(norm_of, 3).result()
        first_s = clock()
        results = list(pool.map(norm_of, range(N_ITEMS)))
    report(elapsed_s=clock(), first_s=first_s, first=first, results=results)
