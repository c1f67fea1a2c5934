"""Bounded concurrency for task runs, with a progress bar for the person waiting."""

from __future__ import annotations


def run_bounded(submit, items, max_parallel: int, *, desc: str | None = None, unit: str = "item",
                describe=None) -> list:
    """``[submit(item).result() for item in items]`` with at most ``max_parallel`` task runs at once.

    ``submit`` returns a Prefect future.  Results come back in the order of
    ``items``.  With ``desc``, a progress bar counts finished items;
    ``describe(result)`` gives its postfix (a dict).
    """
    from prefect.futures import as_completed

    bar = None
    if desc:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc, unit=unit)
    results: dict[int, object] = {}
    pending = list(enumerate(items))
    running = {}
    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                i, item = pending.pop(0)
                running[submit(item)] = i
            finished = next(as_completed(list(running)))
            results[running.pop(finished)] = r = finished.result()
            if bar is not None:
                bar.update(1)
                if describe is not None:
                    bar.set_postfix(describe(r))
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(items))]
