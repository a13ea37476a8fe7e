"""An asyncio program handing CPU-bound calls to the pool with ``loop.run_in_executor``."""

import asyncio

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin


async def main() -> list[int]:
    loop = asyncio.get_running_loop()
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        return list(
            await asyncio.gather(*(loop.run_in_executor(pool, spin, x) for x in range(N_ITEMS)))
        )


if __name__ == "__main__":
    clock = Clock()
    results = asyncio.run(main())
    report(elapsed_s=clock(), results=results)
