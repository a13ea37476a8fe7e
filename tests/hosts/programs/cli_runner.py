"""A click command run through ``click.testing.CliRunner``, which swaps ``sys.stdout`` and
``sys.stderr`` for in-memory streams while the command runs."""

import click
from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin
from click.testing import CliRunner


@click.command()
@click.option("--n", default=N_ITEMS)
def total(n: int) -> None:
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        click.echo(sum(pool.map(spin, range(n))))


if __name__ == "__main__":
    clock = Clock()
    result = CliRunner().invoke(total, [])
    report(
        elapsed_s=clock(),
        exit_code=result.exit_code,
        output=result.output,
        error=None if result.exception is None else type(result.exception).__name__,
    )
