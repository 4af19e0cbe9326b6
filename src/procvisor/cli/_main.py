import click


@click.group()
def main() -> None:
    """procvisor: run, supervise, pool and schedule processes."""
