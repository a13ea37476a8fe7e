"""Nested use: each task of an outer pool runs ``map()`` on a pool of its own."""

from _host import Clock, pool_class, report, spin


def inner_total(k: int) -> int:
    with pool_class()(max_workers=2) as pool:
        return sum(pool.map(spin, range(k * 30, k * 30 + 30)))


if __name__ == "__main__":
    clock = Clock()
    with pool_class()(max_workers=2) as pool:
        totals = list(pool.map(inner_total, range(3)))
    report(elapsed_s=clock(), totals=totals)
