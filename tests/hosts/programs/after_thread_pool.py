"""40 ``submit()`` calls to a fresh pool in a process where a ``ThreadPoolExecutor`` ran (its
threads may linger)."""

from concurrent.futures import ThreadPoolExecutor

from _host import MAX_WORKERS, Clock, pool_class, report, spin

if __name__ == "__main__":
    with ThreadPoolExecutor(4) as threads:
        list(threads.map(abs, range(100)))
    clock = Clock()
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        futures = [pool.submit(spin, x) for x in range(40)]
        first_s = None
        results = []
        for future in futures:
            results.append(future.result())
            first_s = clock() if first_s is None else first_s
    report(elapsed_s=clock(), first_s=first_s, results=results)
