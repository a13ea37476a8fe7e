"""Objects made by ``multiprocessing``'s default context (Lock, RLock, Semaphore, Event, Queue,
Value, Array) given to the workers through ``initargs``, as tqdm and many programs do; and a
Lock through ``submit()``'s arguments, which the stdlib refuses. A thread runs meanwhile
(tqdm's monitor, a server): it must not change how the objects reach the workers."""

import multiprocessing
import threading

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report

shared = {}


def keep(lock, rlock, semaphore, event, queue, value, array) -> None:
    shared.update(
        lock=lock,
        rlock=rlock,
        semaphore=semaphore,
        event=event,
        queue=queue,
        value=value,
        array=array,
    )


def use(x: int) -> int:
    with shared["lock"], shared["rlock"], shared["semaphore"]:
        with shared["value"].get_lock():
            shared["value"].value += 1
        shared["array"][x % 3] += 1
    if x == 0:
        shared["queue"].put("from a worker")
        shared["event"].set()
    return x


def holds(lock, x: int) -> int:
    return x


if __name__ == "__main__":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    objects = (
        multiprocessing.Lock(),
        multiprocessing.RLock(),
        multiprocessing.Semaphore(2),
        multiprocessing.Event(),
        multiprocessing.Queue(),
        multiprocessing.Value("i", 0),
        multiprocessing.Array("i", 3),
    )
    clock = Clock()
    with pool_class()(max_workers=MAX_WORKERS, initializer=keep, initargs=objects) as pool:
        futures = [pool.submit(use, x) for x in range(N_ITEMS)]
        results = [f.result(timeout=60) for f in futures]
        try:
            pool.submit(holds, multiprocessing.Lock(), 1).result(timeout=60)
            lock_by_submit = "passed"
        except Exception as exc:  # the stdlib: RuntimeError; ours: PicklingError from it
            why = f"{exc} {exc.__cause__}"
            lock_by_submit = "refused" if "through inheritance" in why else repr(exc)
    elapsed_s = clock()
    stop.set()
    report(
        elapsed_s=elapsed_s,
        results=results,
        value=objects[5].value,
        array=list(objects[6]),
        event=objects[3].is_set(),
        queued=objects[4].get(timeout=10),
        lock_by_submit=lock_by_submit,
    )
