"""tqdm's ``process_map`` (it makes a ``multiprocessing`` ``RLock`` and passes it to the
pool's workers as ``initargs``), with the pool class put in the stdlib's place."""

import concurrent.futures

from _host import N_ITEMS, Clock, pool_class, report, spin

if __name__ == "__main__":
    concurrent.futures.ProcessPoolExecutor = pool_class()
    from tqdm.contrib.concurrent import process_map

    clock = Clock()
    results = process_map(spin, range(N_ITEMS), max_workers=2, chunksize=8, disable=True)
    report(elapsed_s=clock(), results=results)
