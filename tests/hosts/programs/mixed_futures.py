"""``as_completed`` and ``wait`` over a mix of the pool's futures and a thread pool's."""

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin

if __name__ == "__main__":
    clock = Clock()
    with ThreadPoolExecutor(2) as threads, pool_class()(max_workers=MAX_WORKERS) as pool:
        futures = [pool.submit(spin, x) for x in range(N_ITEMS)]
        futures += [threads.submit(spin, -x) for x in range(1, 5)]
        done, _ = wait(futures, return_when=FIRST_COMPLETED, timeout=60)
        first_done = len(done) >= 1
        results = sorted(f.result() for f in as_completed(futures, timeout=60))
        all_done, not_done = wait(futures, timeout=60)
    report(
        elapsed_s=clock(),
        first_done=first_done,
        results=results,
        n_done=len(all_done),
        n_not_done=len(not_done),
    )
