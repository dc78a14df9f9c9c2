"""Running a fleet sweep: every (workload, chip) pair sized in this process, over ``jobs`` local
worker processes, or as tasks on a Ray cluster; each pair's points kept in the results store as
they complete (``store.py``), so a killed sweep resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import TypeAdapter

from mtiasim.fleet.mix import Mix, Workload
from mtiasim.fleet.site import Site, load_site
from mtiasim.fleet.sizing import Option, Point, size
from mtiasim.fleet.store import Store

_WORKLOAD = TypeAdapter(Workload)


def _size_task(workload_json: str, chip: str, max_chips: int, site_json: str,
               known: dict[int, str]) -> tuple[str, list[str]]:
    """One pair, in a worker: the option and the points it evaluated, as JSON (picklable anywhere)."""
    w = _WORKLOAD.validate_json(workload_json)
    new: list[Point] = []
    opt = size(w, chip, Mix(chips=[chip], workloads=[w], max_chips=max_chips), Site.model_validate_json(site_json),
               known={n: Point.model_validate_json(p) for n, p in known.items()}, record=new.append)
    return opt.model_dump_json(), [p.model_dump_json() for p in new]


def _pairs(mix: Mix) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(mix.workloads)) for j in range(len(mix.chips))]


def _in_process(mix: Mix, site: Site, store: Store, progress: Callable[[str], None]) -> Iterator[tuple]:
    for i, j in _pairs(mix):
        w, chip = mix.workloads[i], mix.chips[j]
        progress(f"{w.name} on {chip}")
        yield i, j, size(w, chip, mix, site, known=store.known(w, chip),
                         record=lambda p, w=w, chip=chip: store.put(w, chip, p))


def _tasks(mix: Mix, site: Site, store: Store) -> list[tuple[int, int, tuple]]:
    site_json = site.model_dump_json()
    out = []
    for i, j in _pairs(mix):
        w, chip = mix.workloads[i], mix.chips[j]
        known = {n: p.model_dump_json() for n, p in store.known(w, chip).items()}
        out.append((i, j, (w.model_dump_json(), chip, mix.max_chips, site_json, known)))
    return out


def _local_pool(mix: Mix, site: Site, store: Store, jobs: int) -> Iterator[tuple[int, int, str, list[str]]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked copy of a process that has loaded torch may deadlock
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_size_task, *args): (i, j) for i, j, args in _tasks(mix, site, store)}
        for f in as_completed(futures):
            yield (*futures[f], *f.result())


def _ray(mix: Mix, site: Site, store: Store, address: str, jobs: int) -> Iterator[tuple[int, int, str, list[str]]]:
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'mtiasim[ray]'") from None
    started = not ray.is_initialized()
    if address == "local":
        ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    else:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
    try:
        task = ray.remote(_size_task)
        refs = {task.remote(*args): (i, j) for i, j, args in _tasks(mix, site, store)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            ref = done[0]
            yield (*refs.pop(ref), *ray.get(ref))
    finally:
        if started:  # a cluster (or connection) this sweep opened is closed with it
            ray.shutdown()


def sweep(mix: Mix, site: Site | None = None, *, jobs: int = 1, ray: str | None = None, store: Store | None = None,
          progress: Callable[[str], None] | None = None) -> list[list[Option]]:
    """Every chip's option for every workload (``[workload][chip]``). ``ray``: a cluster address,
    ``"auto"``, or ``"local"`` (a local cluster of ``jobs`` CPUs)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    site = site or load_site()
    store = store or Store()
    step = progress or (lambda _: None)
    out: list[list[Any]] = [[None] * len(mix.chips) for _ in mix.workloads]
    if ray is None and jobs == 1:
        for i, j, opt in _in_process(mix, site, store, step):
            out[i][j] = opt
        return out
    results = _ray(mix, site, store, ray, jobs) if ray is not None else _local_pool(mix, site, store, jobs)
    for i, j, opt_json, points in results:
        w, chip = mix.workloads[i], mix.chips[j]
        step(f"{w.name} on {chip} done")
        for p in points:
            store.put(w, chip, Point.model_validate_json(p))
        out[i][j] = Option.model_validate_json(opt_json)
    return out
