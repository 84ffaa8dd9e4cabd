"""A simulated interconnect: run real training while every message costs what a cluster's link costs.

On a laptop, the ranks of a course run share two CPU cores and talk over loopback TCP, which is
nearly free, so overlapping communication with computation, bucketing and compression show nothing.
This module puts a *link with knobs* under ``torch.distributed``:

    results = dpcourse.launch(train, 2, network="25GbE")                  # a preset
    results = dpcourse.launch(train, 2, network=Link(latency=1e-3, bandwidth=200e6))

Inside the workers the default process group is a :class:`SimulatedProcessGroup`: a Python
``ProcessGroup`` that hands every operation to a real gloo group (so every result is bit-identical to
a run without the simulation) and completes the operation's *work* no earlier than the link allows:

* a message costs ``latency + bytes / bandwidth``;
* each rank has one link, full duplex, that carries one transfer at a time in each direction: a
  second transfer queues behind the first;
* a collective costs what its usual algorithm sends from each rank (a ring all-reduce sends
  ``2 (N-1)`` messages of ``S / N`` bytes; all-gather and reduce-scatter half of that; broadcast one
  tensor through a pipeline; send/recv one message);
* waiting sleeps (a thread per operation in flight), so no CPU is spent while "data is on the wire", and
  the computation of the next layers runs meanwhile: that is what makes overlap visible.

Torch's ``DistributedDataParallel``, the course's ``BucketedDDP`` and hand-written collectives run on it
unchanged, and :func:`stats` counts, per rank, every operation and the bytes it put on the wire.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.distributed as dist

__all__ = ["Link", "links", "resolve", "SimulatedProcessGroup", "stats", "reset_stats", "transfers",
           "current_link", "BACKEND"]

BACKEND = "dpcourse_sim"  # the name under which the simulated group is registered with torch.distributed


# --------------------------------------------------------------------------- links and presets

@dataclass(frozen=True)
class Link:
    """One rank's link: ``latency`` seconds per message, ``bandwidth`` bytes per second each way.

    ``dilation`` records by how much a preset was slowed down (see :meth:`dilated`); ``slowdown``
    maps a rank to a factor by which its computation is stretched, which makes it a straggler.
    """

    latency: float
    bandwidth: float
    name: str = "custom link"
    source: str = ""
    dilation: float = 1.0
    slowdown: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.latency, (int, float)) and self.latency >= 0 and math.isfinite(self.latency)):
            raise ValueError(f"Link latency must be a finite number of seconds >= 0, got {self.latency!r}.")
        if not (isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0):
            raise ValueError(f"Link bandwidth must be a positive number of bytes per second, got {self.bandwidth!r} "
                             "(use float('inf') for a link of unlimited bandwidth).")
        for r, f in self.slowdown:
            if not (isinstance(r, int) and r >= 0 and f >= 1.0):
                raise ValueError(f"slowdown maps a rank (int >= 0) to a factor >= 1, got {r!r}: {f!r}.")

    def time(self, nbytes: float, messages: int = 1) -> float:
        """Seconds to send ``messages`` messages carrying ``nbytes`` bytes in all, one after another."""
        return messages * self.latency + nbytes / self.bandwidth

    def dilated(self, factor: float) -> "Link":
        """The same link slowed down ``factor`` times: latency times ``factor``, bandwidth divided by it.

        Use it so that the ratio of computation to communication on this machine matches the
        cluster the link stands for (see :func:`dpcourse.dilation.dilation_for`).
        """
        if not factor > 0:
            raise ValueError(f"a dilation factor must be positive, got {factor!r}.")
        return replace(self, latency=self.latency * factor, bandwidth=self.bandwidth / factor,
                       dilation=self.dilation * factor)

    def with_straggler(self, rank: int, factor: float) -> "Link":
        """The same link, with rank ``rank`` computing ``factor`` times slower than the others."""
        others = tuple((r, f) for r, f in self.slowdown if r != rank)
        return replace(self, slowdown=others + ((rank, float(factor)),))

    def slowdown_of(self, rank: int) -> float:
        return dict(self.slowdown).get(rank, 1.0)

    def __str__(self) -> str:
        text = f"{self.name}: {_seconds(self.latency)} latency, {_rate(self.bandwidth)} per direction"
        if self.dilation != 1.0:
            text += f" (dilated x{self.dilation:,.4g})"
        for r, f in self.slowdown:
            text += f"; rank {r} computes {f:g}x slower"
        return text


def _seconds(s: float) -> str:
    if s == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


def _rate(b: float) -> str:
    if math.isinf(b):
        return "unlimited bandwidth"
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.3g} B/s"


# Figures are per GPU (or per node's NIC) and per direction, as the vendors state them; latencies
# are typical one-way small-message figures. Real links deliver somewhat less than nominal.
_PRESETS = {
    "ideal": Link(0.0, float("inf"), "ideal", "no cost at all: counts bytes, adds no time"),
    "NVLink": Link(2e-6, 450e9, "NVLink 4 (H100/H200)",
                   "NVIDIA H100/H200 datasheets: 900 GB/s NVLink per GPU, both directions together "
                   "(450 GB/s each way); ~2 us latency through NVSwitch (NVIDIA NVLink/NVSwitch overview)."),
    "InfiniBand NDR": Link(2e-6, 50e9, "InfiniBand NDR",
                           "NVIDIA ConnectX-7 / Quantum-2 datasheets: 400 Gb/s per port = 50 GB/s each way; "
                           "~1-2 us port-to-port latency with RDMA."),
    "PCIe": Link(2e-6, 32e9, "PCIe 4.0 x16",
                 "PCI-SIG PCIe 4.0: 16 GT/s per lane x 16 lanes, ~32 GB/s each way before protocol overhead; "
                 "~1-2 us for a small transfer between GPUs without NVLink."),
    "100GbE": Link(10e-6, 12.5e9, "100 Gigabit Ethernet",
                   "IEEE 802.3 line rate 100 Gb/s = 12.5 GB/s each way; ~5-10 us with RoCE, more over TCP."),
    "25GbE": Link(20e-6, 3.125e9, "25 Gigabit Ethernet",
                  "IEEE 802.3by line rate 25 Gb/s = 3.125 GB/s each way; ~20 us through a switch over TCP."),
    "10GbE": Link(30e-6, 1.25e9, "10 Gigabit Ethernet",
                  "IEEE 802.3ae line rate 10 Gb/s = 1.25 GB/s each way; ~30 us over TCP in a data centre."),
    "1GbE": Link(50e-6, 125e6, "1 Gigabit Ethernet",
                 "IEEE 802.3ab line rate 1 Gb/s = 125 MB/s each way; ~50 us over TCP on a local network."),
}


def links() -> dict[str, Link]:
    """The preset links by name, with their figures (``print(link)``) and sources (``link.source``)."""
    return dict(_PRESETS)


def resolve(network: "Link | str | None") -> Link | None:
    """A :class:`Link` from a preset's name or a Link (None stays None: no simulation)."""
    if network is None or isinstance(network, Link):
        return network
    if isinstance(network, str):
        for name, link in _PRESETS.items():
            if name.lower() == network.lower().replace("_", " "):
                return link
        raise ValueError(f"unknown network {network!r}: use one of {', '.join(_PRESETS)} "
                         "or dpcourse.Link(latency=seconds, bandwidth=bytes_per_second).")
    raise TypeError(f"network must be a preset's name or a dpcourse.Link, got {type(network).__name__}.")


# --------------------------------------------------------------------------- per-rank clock and stats

class _Wire:
    """One rank's link: when each direction is next free, the threads that finish works, and counters.

    There is one per process (one rank, one link), shared by every group the rank belongs to.
    """

    def __init__(self, link: Link, rank: int):
        self.link, self.rank = link, rank
        self.out_free = 0.0  # time.monotonic() at which the outgoing direction is next idle
        self.in_free = 0.0
        self.lock = threading.Lock()
        # Threads that wait for gloo and then sleep until the link's deadline: a sleeping thread costs
        # no CPU, and each unfinished operation holds one (DDP keeps a few buckets in flight).
        self.waiters = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dpcourse-wire")
        self.reset()

    def reset(self) -> None:
        self.ops: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.wire_s = 0.0
        self.log: list[tuple[str, float, float, int]] = []

    def book(self, op: str, nbytes: int, messages: int, start: float, incoming: bool = False) -> float:
        """Reserve one direction of the link for a transfer that may start at ``start``; return its end."""
        cost = self.link.time(nbytes, messages) if messages else 0.0
        with self.lock:
            if incoming:
                begin = max(start, self.in_free)
                self.in_free = begin + cost
            else:
                begin = max(start, self.out_free)
                self.out_free = begin + cost
                self.ops[op] = self.ops.get(op, 0) + 1
                self.bytes[op] = self.bytes.get(op, 0) + nbytes
                self.wire_s += cost
            if len(self.log) < 100_000:
                self.log.append((op, begin, begin + cost, nbytes))
        return begin + cost

_WIRE: _Wire | None = None
_THREAD = threading.local()  # per thread: CPU time when it last started an operation (for stragglers)


def current_link() -> Link | None:
    """The link this process's ranks run on, or None outside a simulated run."""
    return _WIRE.link if _WIRE is not None else None


def stats() -> dict[str, Any]:
    """This rank's counters: operations and bytes sent per operation, total bytes, busy seconds."""
    if _WIRE is None:
        raise RuntimeError("dpcourse.network.stats() counts traffic of a simulated link: launch with "
                           "network=... (network='ideal' counts without slowing anything down).")
    with _WIRE.lock:
        return {"link": str(_WIRE.link), "ops": dict(_WIRE.ops), "bytes": dict(_WIRE.bytes),
                "bytes_sent": sum(_WIRE.bytes.values()), "wire_s": _WIRE.wire_s}


def reset_stats() -> None:
    """Zero this rank's counters and its transfer log."""
    if _WIRE is not None:
        with _WIRE.lock:
            _WIRE.reset()


def transfers(since: float = 0.0) -> list[tuple[str, float, float, int]]:
    """This rank's simulated transfers ``(op, start, end, bytes)`` in ``time.monotonic()`` seconds.

    Outgoing transfers only: these are the bars of a timeline of what was on the wire.
    """
    if _WIRE is None:
        return []
    with _WIRE.lock:
        return [t for t in _WIRE.log if t[2] >= since and t[0] != "recv"]


# --------------------------------------------------------------------------- the process group

def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class SimulatedProcessGroup(dist.ProcessGroup):
    """A process group that runs every operation on gloo and completes it when the link says.

    What each rank is charged, with ``N`` ranks and ``S`` the bytes of the full result:

    ============================  =====================  ====================
    operation                     messages               bytes sent
    ============================  =====================  ====================
    all-reduce (ring)             2 (N-1)                2 (N-1) / N * S
    reduce-scatter, all-gather    N-1                    (N-1) / N * S
    broadcast, reduce (pipeline)  N-1 (on the path)      S
    all-to-all                    N-1                    (N-1) / N * S
    gather, scatter               N-1 at the root, 1     what it sends
    send                          1                      the tensor
    recv                          (incoming link)        0
    barrier                       2 (N-1)                0
    ============================  =====================  ====================
    """

    def __init__(self, store, rank: int, size: int, timeout, wire: _Wire, name: str = ""):
        super().__init__(rank, size)
        self._name = name
        self._gloo = dist.ProcessGroupGloo(store, rank, size, timeout)
        self._meta = dist.ProcessGroupGloo(dist.PrefixStore("meta", store), rank, size, timeout)
        self._wire = wire
        self._n = size

    def getBackendName(self) -> str:  # noqa: N802 (torch's names)
        return BACKEND

    def getGroupName(self) -> str:  # noqa: N802 (device meshes, as FSDP2 makes them, look groups up by name)
        return self._name

    def getGroupDesc(self) -> str:  # noqa: N802
        return f"simulated link {self._name}"

    def _run(self, name: str, *args, opts=None):
        """Start ``name`` on the real gloo group (with ``opts`` when the caller gave some)."""
        self._straggle()
        method = getattr(self._gloo, name)
        return method(*args, opts) if opts is not None else method(*args)

    def _straggle(self) -> None:
        """On a slowed rank, stretch the computation done since it last started an operation.

        Computation is the CPU time this thread used since then (time spent waiting for the wire
        does not count); the rank sleeps ``(factor - 1)`` times as long: a sleep costs no CPU, and
        the others really wait for it, as they would for a slower GPU.
        """
        factor = self._wire.link.slowdown_of(self._wire.rank)
        if factor <= 1.0:
            return
        now = time.thread_time()
        last = getattr(_THREAD, "cpu_mark", None)
        if last is not None:
            time.sleep((factor - 1.0) * max(0.0, now - last))
        _THREAD.cpu_mark = time.thread_time()

    # How a work ends: when gloo is done (its future's callback, or a pool thread waiting on a
    # send/recv), a pool thread sleeps until the link's deadline and then completes our future.
    # DDP reads the reduced tensors from the future's value, so the future must carry them (a None
    # there crashes DDP inside backward()).
    def _finish(self, op: str, work, result, nbytes: int, messages: int, incoming: bool = False,
                sent_until: Callable[[], float] | None = None):
        wire = self._wire
        issued = time.monotonic()
        fut: torch.futures.Future = torch.futures.Future()
        if not incoming:
            deadline = wire.book(op, nbytes, messages, issued)

        def done() -> None:
            fut.set_result(result)

        def arrived(error: BaseException | None, on_pool: bool) -> None:
            if error is not None:  # pass gloo's error (a timeout, a dead peer) on to the caller
                fut.set_exception(error)
                return
            now = time.monotonic()
            if incoming:
                # The message left the sender's wire at `sent_until` (the sender says when, through a
                # side channel), so its last byte reaches this rank's incoming link then, not when
                # the real bytes happened to arrive over loopback.
                start = now if sent_until is None else sent_until() - wire.link.time(nbytes, messages)
                end = wire.book(op, nbytes, messages, start, incoming=True)
            else:
                end = deadline
            # Sleep until the deadline and finish on a pool thread, never on gloo's: a future's
            # .then() callbacks run in the thread that sets its result, and a comm hook's callback may
            # start a collective and wait on it (PowerSGD does), which on gloo's thread would wait
            # for itself forever.
            def sleep_then_done() -> None:
                left = end - time.monotonic()
                if left > 0:
                    time.sleep(left)
                done()

            if on_pool:
                sleep_then_done()
            else:
                wire.waiters.submit(sleep_then_done)

        try:  # collectives tell when they finish through a future; send and recv must be waited for
            gloo_future = work.get_future()
        except RuntimeError:
            gloo_future = None
        if gloo_future is not None:
            def then(f: torch.futures.Future) -> None:
                try:
                    f.wait()
                except BaseException as exc:
                    arrived(exc, on_pool=False)
                    return
                arrived(None, on_pool=False)

            gloo_future.add_done_callback(then)
        else:
            def wait() -> None:
                try:
                    work.wait()
                except BaseException as exc:
                    arrived(exc, on_pool=True)
                    return
                arrived(None, on_pool=True)

            wire.waiters.submit(wait)
        return torch._C._distributed_c10d._create_work_from_future(fut)

    def _ring(self, op, work, result, total_bytes, steps_per_n):
        n = self._n
        if n == 1:
            return self._finish(op, work, result, 0, 0)
        messages = steps_per_n * (n - 1)
        return self._finish(op, work, result, int(messages * total_bytes / n), messages)

    def allreduce(self, tensors, opts=None):
        work = self._run("allreduce", tensors, opts=opts)
        return self._ring("allreduce", work, tensors, _nbytes(tensors), 2)

    def allreduce_coalesced(self, tensors, opts=None):
        work = self._run("allreduce_coalesced", tensors, opts=opts)
        return self._ring("allreduce", work, tensors, _nbytes(tensors), 2)

    def broadcast(self, tensors, opts=None):
        work = self._run("broadcast", tensors, opts=opts)
        n = self._n
        return self._finish("broadcast", work, tensors, _nbytes(tensors) if n > 1 else 0, n - 1)

    def reduce(self, tensors, opts=None):
        work = self._run("reduce", tensors, opts=opts)
        n = self._n
        return self._finish("reduce", work, tensors, _nbytes(tensors) if n > 1 else 0, n - 1)

    def allgather(self, output_lists, inputs, opts=None):
        work = self._run("allgather", output_lists, inputs, opts=opts)
        return self._ring("allgather", work, output_lists, _nbytes(inputs) * self._n, 1)

    def _allgather_base(self, output, input, opts=None):
        work = self._run("_allgather_base", output, input, opts=opts)
        return self._ring("allgather", work, [output], _nbytes([output]), 1)

    # torch >= 2.12 names the tensor forms all_gather_single / reduce_scatter_single (FSDP2 uses them)
    def all_gather_single(self, output, input, opts=None):
        return self._allgather_base(output, input, opts)

    def reduce_scatter_single(self, output, input, opts=None):
        return self._reduce_scatter_base(output, input, opts)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        return self.alltoall_base(output, input, output_split_sizes, input_split_sizes, opts)

    def reduce_scatter(self, outputs, input_lists, opts=None):
        work = self._run("reduce_scatter", outputs, input_lists, opts=opts)
        return self._ring("reduce_scatter", work, outputs, _nbytes(outputs) * self._n, 1)

    def _reduce_scatter_base(self, output, input, opts=None):
        work = self._run("_reduce_scatter_base", output, input, opts=opts)
        return self._ring("reduce_scatter", work, [output], _nbytes([input]), 1)

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        work = self._run("alltoall_base", output, input, output_split_sizes, input_split_sizes, opts=opts)
        return self._ring("alltoall", work, [output], _nbytes([input]), 1)

    def alltoall(self, outputs, inputs, opts=None):
        work = self._run("alltoall", outputs, inputs, opts=opts)
        return self._ring("alltoall", work, outputs, _nbytes(inputs), 1)

    def _rooted(self, op: str, work, result, piece: int, opts, root_sends: bool):
        """Gather and scatter: the root moves ``N - 1`` pieces of ``piece`` bytes, every other rank one.

        Whoever receives (the root of a gather, the others in a scatter) waits on its incoming link.
        """
        is_root = self.rank() == (getattr(opts, "rootRank", 0) if opts is not None else 0)
        count = self._n - 1 if is_root else 1
        return self._finish(op, work, result, piece * count, count, incoming=is_root != root_sends)

    def gather(self, output_lists, inputs, opts=None):
        work = self._run("gather", output_lists, inputs, opts=opts)
        return self._rooted("gather", work, output_lists, _nbytes(inputs), opts, root_sends=False)

    def scatter(self, outputs, input_lists, opts=None):
        work = self._run("scatter", outputs, input_lists, opts=opts)
        return self._rooted("scatter", work, outputs, _nbytes(outputs), opts, root_sends=True)

    def barrier(self, opts=None):
        work = self._run("barrier", opts=opts)
        return self._finish("barrier", work, [], 0, 2 * (self._n - 1))

    # Point-to-point messages: each data message is preceded, on a second gloo group, by 8 bytes that
    # say when the sender's wire will have sent it; the receiver's copy ends then (or later, if its
    # incoming link is busy), however fast loopback delivered the real bytes.
    def send(self, tensors, dst: int, tag: int):
        self._straggle()
        nbytes = _nbytes(tensors)
        end = torch.tensor([self._wire.link.time(nbytes) + max(time.monotonic(), self._wire.out_free)],
                           dtype=torch.float64)
        meta = self._meta.send([end], dst, tag)
        work = self._gloo.send(tensors, dst, tag)
        return self._finish("send", _Both(work, meta), tensors, nbytes, 1)

    def recv(self, tensors, src: int, tag: int):
        self._straggle()
        end = torch.empty(1, dtype=torch.float64)
        meta = self._meta.recv([end], src, tag)
        work = self._gloo.recv(tensors, src, tag)
        return self._finish("recv", _Both(work, meta), tensors, _nbytes(tensors), 1, incoming=True,
                            sent_until=lambda: float(end))

    def recv_anysource(self, tensors, tag: int):
        self._straggle()
        work = self._gloo.recv_anysource(tensors, tag)
        end = torch.empty(1, dtype=torch.float64)

        def sent_until() -> float:  # the sender is known once the data is in
            self._meta.recv([end], work.source_rank(), tag).wait()
            return float(end)

        return self._finish("recv", work, tensors, _nbytes(tensors), 1, incoming=True, sent_until=sent_until)


class _Both:
    """Wait for a data message and its side-channel message (the 8 bytes that say when it was sent)."""

    def __init__(self, data, meta):
        self.data, self.meta = data, meta

    def get_future(self):
        raise RuntimeError("point-to-point works have no future")

    def wait(self) -> None:
        self.meta.wait()
        self.data.wait()


def _create(opts, _backend_options=None):
    if _WIRE is None:
        raise RuntimeError(f"the {BACKEND!r} backend is made by dpcourse.launch(..., network=...); "
                           "call use_link(link) first when you start the process group yourself.")
    return SimulatedProcessGroup(opts.store, opts.group_rank, opts.group_size, opts.timeout, _WIRE,
                                 name=opts.group_id)


def use_link(link: Link, rank: int) -> str:
    """Make this process's next ``init_process_group(BACKEND)`` run on ``link``; return the backend name."""
    global _WIRE
    _WIRE = _Wire(link, rank)
    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, _create, extended_api=True, devices=["cpu"])
    return BACKEND
