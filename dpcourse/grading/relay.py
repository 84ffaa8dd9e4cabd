"""The grading network: every rank's process group is a pipe to the grader's harness, which carries the messages.

While a test runs, the ranks share no transport of their own (each sits in its own network namespace
where the sandbox allows, see ``isolate``). Their default process group, and every group made with
``new_group``, is a :class:`RelayGroup`: a ``torch.distributed.ProcessGroup`` subclass that sends
each operation to the :class:`Router` in the harness process (which never runs learner code) and
waits for the answer. The router

* carries out send/recv (a blocking send completes when the peer posts the matching receive, so an
  order of blocking calls that can deadlock does deadlock) and the collectives;
* refuses what the exercise does not allow (``allowed``) and counts every operation and byte per
  rank: these counts are the harness's own, out of the learner's reach, whatever a rank's code
  patches, wraps or calls under ``torch._C``;
* checks that the ranks agree (same collective, same sizes) and says who called what when they don't.

Messages: a 4-byte length, a JSON header, then the raw bytes of the tensors it names. Nothing a rank
sends is unpickled or executed.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections import defaultdict
from functools import reduce
from typing import Any

import numpy as np

__all__ = ["RelayGroup", "Router", "install", "send_frame", "recv_frame", "BACKEND"]

BACKEND = "dpgrade"
_LEN = struct.Struct("!I")
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 512 << 20
MAX_QUEUED = 1 << 30  # bytes the harness holds for receives not posted yet (a submission cannot fill its memory)
_NP = {"float32": "<f4", "float64": "<f8", "float16": "<f2", "int64": "<i8", "int32": "<i4", "int16": "<i2",
       "int8": "|i1", "uint8": "|u1", "bool": "|b1", "complex64": "<c8", "complex128": "<c16"}
P2P = frozenset({"send", "recv"})
WRITE_LOCK = threading.RLock()  # one writer at a time on a rank's pipe (the network thread, the sandbox's reports)


# --------------------------------------------------------------------------- framing

def send_frame(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps({**header, "nbytes": len(payload)}).encode()
    sock.sendall(_LEN.pack(len(head)) + head + payload)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def recv_frame(sock: socket.socket) -> tuple[dict, bytes]:
    (n,) = _LEN.unpack(_read_exact(sock, _LEN.size))
    if n > MAX_HEADER:
        raise ValueError("message header too large")
    header = json.loads(_read_exact(sock, n))
    if not isinstance(header, dict):
        raise ValueError("message header is not an object")
    size = header.get("nbytes", 0)
    if not isinstance(size, int) or not 0 <= size <= MAX_PAYLOAD:
        raise ValueError("bad payload size")
    return header, _read_exact(sock, size)


# --------------------------------------------------------------------------- the rank's side

def _spec(t: Any) -> list:
    return [str(t.dtype).replace("torch.", ""), list(t.shape)]


def _bytes(tensors: list) -> bytes:
    import torch

    out = []
    for t in tensors:
        c = t.detach().contiguous().view(-1)
        out.append(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    return b"".join(out)


class _Channel:
    """The rank's end of its pipe to the router: numbered requests, a thread that fills in the answers."""

    def __init__(self, sock: socket.socket):
        self.sock, self.lock, self.seq, self.pending = sock, WRITE_LOCK, 0, {}
        threading.Thread(target=self._read, name="dpcourse-grading-network", daemon=True).start()

    def request(self, header: dict, tensors: list, dests: list) -> Any:
        import torch

        fut = torch.futures.Future()
        with self.lock:
            self.seq += 1
            self.pending[self.seq] = (fut, dests)
            send_frame(self.sock, {**header, "seq": self.seq, "tensors": [_spec(t) for t in tensors]}, _bytes(tensors))
        return fut

    def _read(self) -> None:
        import torch

        while True:
            try:
                header, payload = recv_frame(self.sock)
            except Exception:  # the harness is gone: fail whatever still waits
                for fut, _ in list(self.pending.values()):
                    if not fut.done():
                        fut.set_exception(RuntimeError("the grading network closed"))
                return
            fut, dests = self.pending.pop(header.get("seq"), (None, None))
            if fut is None:
                continue
            if "error" in header:
                fut.set_exception(RuntimeError(str(header["error"])))
                continue
            offset = 0
            try:
                with torch.no_grad():
                    for t in dests:
                        n = t.numel() * t.element_size()
                        if n:
                            src = torch.frombuffer(bytearray(payload[offset:offset + n]), dtype=torch.uint8)
                            t.view(-1).view(torch.uint8).copy_(src) if t.is_contiguous() else \
                                t.copy_(src.view(t.dtype).view(t.shape))
                        offset += n
            except Exception as exc:  # noqa: BLE001
                fut.set_exception(RuntimeError(f"the grading network could not deliver a result: {exc}"))
                continue
            fut.set_result(dests)


def _make_group_class() -> type:
    import torch
    import torch.distributed as dist

    class RelayWork(dist.Work):
        """One operation in flight; ``wait()`` raises what the grader's relay answered when it refused it."""

        def __init__(self, fut: Any):
            super().__init__()
            self._fut = fut

        def wait(self, timeout: Any = None) -> bool:
            self._fut.wait()  # raises the relay's error, if it sent one
            return True

        def get_future(self) -> Any:
            return self._fut

        def is_completed(self) -> bool:
            return self._fut.done()

        def is_success(self) -> bool:
            return self._fut.done()

    class RelayGroup(dist.ProcessGroup):
        """A process group whose every operation is carried out (and counted) by the grader's harness."""

        def __init__(self, channel: _Channel, rank: int, size: int, group: str, ranks: list[int]):
            super().__init__(rank, size)
            self._channel, self._group, self._ranks = channel, group, ranks

        def getBackendName(self) -> str:
            return BACKEND

        def _op(self, op: str, sent: list, dests: list, **args: Any) -> Any:
            fut = self._channel.request({"op": op, "group": self._group, "ranks": self._ranks, "args": args},
                                        sent, dests)
            return RelayWork(fut)

        @staticmethod
        def _reduce(opts: Any) -> str:
            op = getattr(opts, "reduceOp", None)
            for name in ("SUM", "AVG", "PRODUCT", "MIN", "MAX"):
                if op == getattr(dist.ReduceOp, name):
                    return name
            return "UNSUPPORTED"

        def allreduce(self, tensors: list, opts: Any = None) -> Any:
            return self._op("allreduce", tensors, tensors, reduce=self._reduce(opts))

        def allreduce_coalesced(self, tensors: list, opts: Any = None) -> Any:
            return self._op("allreduce_coalesced", tensors, tensors, reduce=self._reduce(opts))

        def reduce(self, tensors: list, opts: Any = None) -> Any:
            return self._op("reduce", tensors, tensors, reduce=self._reduce(opts), root=int(opts.rootRank))

        def broadcast(self, tensors: list, opts: Any = None) -> Any:
            return self._op("broadcast", tensors, tensors, root=int(opts.rootRank))

        def allgather(self, outputs: list, inputs: list, opts: Any = None) -> Any:
            return self._op("allgather", inputs, [t for out in outputs for t in out])

        def _allgather_base(self, output: Any, input: Any, opts: Any = None) -> Any:
            return self._op("allgather", [input], [output])

        def reduce_scatter(self, outputs: list, inputs: list, opts: Any = None) -> Any:
            return self._op("reduce_scatter", [t for lst in inputs for t in lst], outputs, reduce=self._reduce(opts))

        def _reduce_scatter_base(self, output: Any, input: Any, opts: Any = None) -> Any:
            return self._op("reduce_scatter", [input], [output], reduce=self._reduce(opts))

        def gather(self, outputs: list, inputs: list, opts: Any = None) -> Any:
            return self._op("gather", inputs, [t for out in outputs for t in out], root=int(opts.rootRank))

        def scatter(self, outputs: list, inputs: list, opts: Any = None) -> Any:
            return self._op("scatter", [t for lst in inputs for t in lst], outputs, root=int(opts.rootRank))

        def alltoall_base(self, output: Any, input: Any, out_splits: list, in_splits: list, opts: Any = None) -> Any:
            return self._op("alltoall", [input], [output], out_splits=list(out_splits), in_splits=list(in_splits))

        def barrier(self, opts: Any = None) -> Any:
            return self._op("barrier", [], [])

        def send(self, tensors: list, dst: int, tag: int = 0) -> Any:
            return self._op("send", tensors, [], peer=int(dst), tag=int(tag))

        def recv(self, tensors: list, src: int, tag: int = 0) -> Any:
            return self._op("recv", [], tensors, peer=int(src), tag=int(tag), shapes=[_spec(t) for t in tensors])

        def recv_anysource(self, tensors: list, tag: int = 0) -> Any:
            return self._op("recv", [], tensors, peer=-1, tag=int(tag), shapes=[_spec(t) for t in tensors])

    del torch
    return RelayGroup


RelayGroup: Any = None
_CHANNEL: list = []


def define_group_class() -> None:
    """Define :class:`RelayGroup` now: the harness does it before it forks, so no rank pays for it."""
    global RelayGroup
    RelayGroup = RelayGroup or _make_group_class()


def mark(label: str) -> None:
    """Tell the harness this rank reached ``label`` (the suite's worker marks steps; see ``Router.mark``)."""
    if _CHANNEL:
        with WRITE_LOCK:
            send_frame(_CHANNEL[0].sock, {"type": "mark", "label": str(label)})


class _NoStore:
    """Stands in for the rendezvous store: a group built by hand from it can never meet its peers."""


def install(sock: socket.socket, rank: int, world_size: int) -> None:
    """Make the relay this process's default group (and the creator of every ``new_group``)."""
    import datetime

    import torch.distributed as dist

    define_group_class()
    channel = _Channel(sock)
    _CHANNEL.append(channel)

    class Unusable(dist.Store):  # every use of the store fails: no hand-built group can rendezvous through it
        def _no(self, *_: Any, **__: Any) -> Any:
            raise RuntimeError("the grading process group has no rendezvous store: build no process groups of "
                               "your own; use the default group (or dist.new_group).")

        set = get = add = compare_set = wait = delete_key = num_keys = check = _no

    def create(opts: Any, _backend_opts: Any) -> Any:
        ranks = list(opts.global_ranks_in_group) or list(range(world_size))
        return RelayGroup(channel, opts.group_rank, opts.group_size, str(opts.group_id), ranks)

    if BACKEND.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(BACKEND, create, extended_api=True, devices=["cpu"])
    dist.init_process_group(BACKEND, store=Unusable(), rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(hours=1))


# --------------------------------------------------------------------------- the harness's side

class Refused(Exception):
    """An operation the router will not carry out; the message goes back to the rank."""


def _arrays(header: dict, payload: bytes) -> list[np.ndarray]:
    specs = header.get("tensors")
    if not isinstance(specs, list) or len(specs) > 100_000:
        raise Refused("malformed message")
    out, offset = [], 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 2 and spec[0] in _NP and isinstance(spec[1], list)
                and all(isinstance(d, int) and d >= 0 for d in spec[1])):
            raise Refused(f"tensors of type {spec[0] if isinstance(spec, list) and spec else '?'} cannot travel on "
                          "the grading network")
        dtype = np.dtype(_NP[spec[0]])
        n = int(np.prod(spec[1], dtype=np.int64)) * dtype.itemsize
        if offset + n > len(payload):
            raise Refused("malformed message")
        out.append(np.frombuffer(payload, dtype=dtype, count=n // dtype.itemsize, offset=offset).reshape(spec[1]))
        offset += n
    return out


def _describe(op: str, arrays: list[np.ndarray]) -> str:
    sizes = ", ".join(f"{a.size} {a.dtype}" for a in arrays) or "nothing"
    return f"{op} of {sizes}"


_REDUCE = {"SUM": np.add, "PRODUCT": np.multiply, "MIN": np.minimum, "MAX": np.maximum}


def _reduce(kind: str, arrays: list[np.ndarray]) -> np.ndarray:
    if kind == "AVG":
        total = reduce(np.add, arrays)
        return (total / len(arrays)).astype(arrays[0].dtype)
    if kind not in _REDUCE:
        raise Refused(f"reduce op {kind} is not supported by the grading network")
    return reduce(_REDUCE[kind], arrays)


class Router:
    """Carries each rank's operations (see the module docstring); ``stats`` is what the grader judges."""

    def __init__(self, world_size: int, allowed: frozenset[str] | None = None, what: str = "send/recv"):
        self.world, self.allowed, self.what = world_size, allowed, what
        self.stats = [{"ops": defaultdict(int), "bytes_sent": 0, "bytes": defaultdict(int), "refused": defaultdict(int),
                       "sent_to": defaultdict(int), "sequence": [], "same_as_all": 0} for _ in range(world_size)]
        self.log: list[str] = []  # the first refusals and disagreements, in words
        self.outbox: list[tuple[int, dict, bytes]] = []  # (rank, header, payload) to send
        self.sends: dict[tuple, list] = defaultdict(list)   # (group, src, dst, tag) -> [(seq, arrays)]
        self.recvs: dict[tuple, list] = defaultdict(list)   # (group, dst) -> [(src or -1, tag, seq, shapes)]
        self.collectives: dict[str, dict[int, dict]] = defaultdict(dict)  # group -> index -> rank -> call
        self.calls: dict[tuple[str, int], int] = defaultdict(int)  # (group, rank) -> collectives so far
        self.waiting: dict[int, dict[int, str]] = defaultdict(dict)  # rank -> seq -> what it waits for
        self.queued = 0  # bytes of sends waiting for their receive

    # ---- bookkeeping
    def _reply(self, rank: int, seq: Any, arrays: list[np.ndarray] | None = None, error: str | None = None) -> None:
        self.waiting[rank].pop(seq, None)
        if error is not None:
            self.outbox.append((rank, {"seq": seq, "error": error}, b""))
        else:
            data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays or [])
            self.outbox.append((rank, {"seq": seq}, data))

    def _note(self, text: str) -> None:
        if len(self.log) < 20 and text not in self.log:
            self.log.append(text)

    def blocked(self) -> dict[int, list[str]]:
        """What each rank is waiting for now (for a test that ran out of time)."""
        return {r: list(w.values()) for r, w in self.waiting.items() if w}

    def result_stats(self) -> list[dict]:
        return [{"ops": dict(s["ops"]), "bytes_sent": s["bytes_sent"], "bytes": dict(s["bytes"]),
                 "refused": dict(s["refused"]), "sent_to": {str(k): v for k, v in s["sent_to"].items()},
                 "sequence": s["sequence"], "same_as_all": s["same_as_all"]} for s in self.stats]

    def mark(self, rank: int, label: Any) -> None:
        """A point in the rank's test (``"step 2"``) that splits its sequence of operations."""
        seq = self.stats[rank]["sequence"]
        if len(seq) < 2000:
            seq.append(["mark", str(label)[:80]])

    # ---- one message from one rank
    def handle(self, rank: int, header: dict, payload: bytes) -> None:
        seq, op = header.get("seq"), header.get("op")
        try:
            if not isinstance(op, str) or not isinstance(header.get("args", {}), dict):
                raise Refused("malformed message")
            arrays = _arrays(header, payload)
            ranks = header.get("ranks")
            if not (isinstance(ranks, list) and ranks and all(isinstance(r, int) and 0 <= r < self.world for r in ranks)
                    and rank in ranks and len(set(ranks)) == len(ranks)):
                raise Refused("malformed group")
            group = f"{header.get('group')}:{','.join(map(str, ranks))}"
            stats = self.stats[rank]
            stats["ops"][op] += 1
            if self.allowed is not None and op not in self.allowed:
                stats["refused"][op] += 1
                self._note(f"rank {rank} used {op} instead of {self.what}")
                raise Refused(f"this exercise allows only {self.what}: {op} is not available on the grading network")
            sent = sum(a.nbytes for a in arrays)
            if len(stats["sequence"]) < 2000:
                stats["sequence"].append([op, int(sum(a.size for a in arrays))])
            stats["bytes_sent"] += sent
            stats["bytes"][op] += sent
            args = header.get("args") or {}
            if op in P2P:
                self._p2p(rank, seq, op, group, ranks, arrays, args)
            else:
                self._collective(rank, seq, op, group, ranks, arrays, args)
        except Refused as exc:
            self._reply(rank, seq, error=str(exc))
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._reply(rank, seq, error=f"the grading network could not carry this operation: {exc}")

    def _p2p(self, rank: int, seq: Any, op: str, group: str, ranks: list[int], arrays: list, args: dict) -> None:
        peer, tag = args.get("peer"), args.get("tag", 0)
        if not isinstance(peer, int) or not isinstance(tag, int) or not -1 <= peer < len(ranks):
            raise Refused(f"{op}: rank {peer} is not in the group")
        other = ranks[peer] if peer >= 0 else -1
        if other == rank:
            raise Refused(f"{op}: a rank cannot {op} {'to' if op == 'send' else 'from'} itself")
        if op == "send":
            if other < 0:
                raise Refused("send needs a destination rank")
            self.stats[rank]["sent_to"][other] += arrays and sum(a.nbytes for a in arrays) or 0
            self.waiting[rank][seq] = f"send to rank {other} (waiting for it to receive)"
            queue = self.recvs[(group, other)]
            for i, (src, rtag, rseq, shapes) in enumerate(queue):
                if src in (rank, -1) and rtag == tag:
                    queue.pop(i)
                    self._deliver(rank, seq, arrays, other, rseq, shapes)
                    return
            if self.queued > MAX_QUEUED:
                raise Refused("too much data sent and not yet received: receive what the other ranks send")
            self.queued += sum(a.nbytes for a in arrays)
            self.sends[(group, rank, other, tag)].append((seq, arrays))
        else:
            shapes = args.get("shapes")
            self.waiting[rank][seq] = f"recv from {'any rank' if other < 0 else f'rank {other}'}"
            sources = [other] if other >= 0 else [r for r in ranks if r != rank]
            for src in sources:
                queue = self.sends.get((group, src, rank, tag))
                if queue:
                    sseq, sarrays = queue.pop(0)
                    self.queued -= sum(a.nbytes for a in sarrays)
                    self._deliver(src, sseq, sarrays, rank, seq, shapes)
                    return
            self.recvs[(group, rank)].append((other, tag, seq, shapes))

    def _deliver(self, src: int, sseq: Any, arrays: list, dst: int, rseq: Any, shapes: Any) -> None:
        want = [(s[0], list(s[1])) for s in shapes or []] if isinstance(shapes, list) else []
        got = [(str(a.dtype), list(a.shape)) for a in arrays]
        want_n = [(_NP.get(d), int(np.prod(s, dtype=np.int64))) for d, s in want]
        got_n = [(np.dtype(d).str, int(np.prod(s, dtype=np.int64))) for d, s in got]
        if want_n != got_n:
            text = (f"rank {src} sent {_describe('', arrays).strip()[3:]} to rank {dst}, which posted a receive for "
                    f"{', '.join(f'{int(np.prod(s, dtype=np.int64))} {d}' for d, s in want) or 'nothing'}: "
                    "the chunk sizes or the order of the messages differ between sender and receiver")
            self._note(text)
            self._reply(src, sseq, error=text)
            self._reply(dst, rseq, error=text)
            return
        self._reply(src, sseq, [])
        self._reply(dst, rseq, arrays)

    def _collective(self, rank: int, seq: Any, op: str, group: str, ranks: list[int], arrays: list, args: dict) -> None:
        index = self.calls[(group, rank)]
        self.calls[(group, rank)] += 1
        pending = self.collectives[group].setdefault(index, {})
        pending[rank] = {"seq": seq, "op": op, "arrays": arrays, "args": args}
        self.waiting[rank][seq] = f"{op} (waiting for ranks {sorted(set(ranks) - set(pending))})"
        if len(pending) < len(ranks):
            return
        del self.collectives[group][index]
        calls = [pending[r] for r in ranks]
        sigs = [(c["op"], [(a.dtype.str, a.shape) for a in c["arrays"]],
                 {k: v for k, v in c["args"].items() if k not in ("out_splits", "in_splits")}) for c in calls]
        rooted = calls[0]["op"] in ("gather", "scatter")  # the root brings other tensors than the rest
        try:
            if any(c["op"] != calls[0]["op"] for c in calls) or (not rooted and any(s != sigs[0] for s in sigs[1:])):
                raise Refused("the ranks called different collectives at the same point: " + "; ".join(
                    f"rank {r}: {_describe(c['op'], c['arrays'])}" for r, c in zip(ranks, calls)))
            results = self._compute(op, ranks, calls)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # inputs that cannot be combined: all fail
            text = f"the ranks' {op} could not be carried out together: {exc}"
            for r, c in zip(ranks, calls):
                self._reply(r, c["seq"], error=text)
            return
        except Refused as exc:
            self._note(str(exc))
            for r, c in zip(ranks, calls):
                self._reply(r, c["seq"], error=str(exc))
            return
        if op in ("allreduce", "allreduce_coalesced") and len(ranks) > 1 and all(
                all(np.array_equal(a, b) for a, b in zip(c["arrays"], calls[0]["arrays"])) for c in calls[1:]):
            for r in ranks:  # every rank brought the same values: nothing was gained by reducing them
                self.stats[r]["same_as_all"] += 1
        for r, c in zip(ranks, calls):
            self._reply(r, c["seq"], results[r])

    def _compute(self, op: str, ranks: list[int], calls: list[dict]) -> dict[int, list[np.ndarray]]:
        n, args = len(ranks), calls[0]["args"]
        per = [c["arrays"] for c in calls]
        if op in ("allreduce", "allreduce_coalesced", "reduce"):
            out = [_reduce(args.get("reduce", "SUM"), [p[i] for p in per]) for i in range(len(per[0]))]
            if op == "reduce":
                root = ranks[args["root"]]
                return {r: out if r == root else list(p) for r, p in zip(ranks, per)}
            return {r: out for r in ranks}
        if op == "broadcast":
            return {r: list(per[args["root"]]) for r in ranks}
        if op == "barrier":
            return {r: [] for r in ranks}
        if op == "allgather":
            return {r: [p[0] for p in per] if len(per[0]) == 1 else [p[i] for i in range(len(per[0])) for p in per]
                    for r in ranks}
        if op == "reduce_scatter":
            if len(per[0]) == n:
                return {r: [_reduce(args.get("reduce", "SUM"), [p[i] for p in per])] for i, r in enumerate(ranks)}
            whole = _reduce(args.get("reduce", "SUM"), [p[0].reshape(-1) for p in per])
            return {r: [piece] for r, piece in zip(ranks, np.split(whole, n))}
        if op == "gather":
            root = args["root"]
            return {r: [p[0] for p in per] if i == root else [] for i, r in enumerate(ranks)}
        if op == "scatter":
            root = args["root"]
            return {r: [per[root][i]] for i, r in enumerate(ranks)}
        if op == "alltoall":
            flats = [p[0].reshape(p[0].shape[0], -1) if p[0].ndim else p[0].reshape(-1, 1) for p in per]
            parts = []
            for i, f in enumerate(flats):
                splits = calls[i]["args"].get("in_splits") or [f.shape[0] // n] * n
                parts.append(np.split(f, np.cumsum(splits)[:-1]))
            return {r: [np.concatenate([parts[j][i] for j in range(n)])] for i, r in enumerate(ranks)}
        raise Refused(f"{op} is not supported by the grading network")


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of stream sockets (harness end, rank end)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b


def close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
