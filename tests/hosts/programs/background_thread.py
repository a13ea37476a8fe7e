"""A program with a background thread (a logging ``QueueListener``) running while it uses the
pool; reports when the first parallel result of the fresh pool arrived."""

import logging
import logging.handlers
import queue

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin

if __name__ == "__main__":
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    listener = logging.handlers.QueueListener(records, logging.NullHandler())
    listener.start()
    logging.getLogger("host").addHandler(logging.handlers.QueueHandler(records))
    logging.getLogger("host").warning("started")
    clock = Clock()
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        first = pool.submit(spin, 1).result()
        first_s = clock()
        results = list(pool.map(spin, range(N_ITEMS)))
    elapsed_s = clock()
    listener.stop()
    report(elapsed_s=elapsed_s, first_s=first_s, first=first, results=results)
