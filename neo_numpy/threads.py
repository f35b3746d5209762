"""How many threads each piece of work gets, and the pool that runs a prompt's elementwise work on them.

A matrix product over many rows ([T, D] @ [D, F], a prompt) is compute-bound, so it gets every core. A product over
a few rows (at most MATRIX_VECTOR_ROWS: a decode step of a small batch) reads each weight matrix once and does
little with it: memory-bound, and whether more threads help depends on the machine and on what else runs on it.
Measured on a 2-core machine: on an idle machine two threads read the weights 1.5x faster than one (11.4 vs
7.7 GB/s), while next to another busy process two threads made the same product 30x slower than one (spinning
threads fight for the cores). So that count is not guessed: the first time a model runs a few-row step, it times a
pass over its own MLP weights with each candidate count (`fastest_matrix_vector_threads`) and keeps the fastest.
Each NeoModel.step picks its count from its B*T rows (`NeoModel.blas_threads_for`): the engine's one thread
policy. Generation, the layers and the callers of step set no BLAS threads of their own.
`python benchmarks/threads.py` shows the same measurement in a table.

BLAS threads only speed up the matrix products. A prompt's elementwise work (LayerNorm, GELU, bias) and its
attention blocks go to `RowPool`, a few Python threads: NumPy releases the GIL inside ufuncs and BLAS calls, so
blocks of rows do run on several cores at once. While the pool runs attention blocks, BLAS gets one thread (the
pool is the parallelism). Its threads sleep while they wait for work (BLAS threads spin for a while).
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

from .errors import InputError
from .values import is_int

ROW_BLOCK = 64  # rows per block of a prompt's elementwise work: [64, 3072] float32 is 0.8 MB, within L2
MATRIX_VECTOR_ROWS = 8  # up to this many rows (batch x new positions) a product counts as matrix-vector work


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    prefill: int  # BLAS threads for steps of many rows (prompts), and the RowPool's workers
    decode: int = None  # BLAS threads for steps of at most MATRIX_VECTOR_ROWS rows; None: the model measures it once

    @classmethod
    def choose(cls, threads=None) -> "ThreadPlan":
        """The one check of a `threads` value. None: all cores for prefill, decode measured; an int: that many
        for both; a ThreadPlan: as it is. Every count must be a whole number from 1 to the cores this process may
        use (more BLAS threads than cores only make them wait for each other)."""
        cores = available_cores()
        if isinstance(threads, ThreadPlan):
            if _is_count(threads.prefill, cores) and (threads.decode is None or _is_count(threads.decode, cores)):
                return cls(int(threads.prefill), None if threads.decode is None else int(threads.decode))
            raise InputError(
                f"threads is {threads!r}, but its prefill count must be a whole number from 1 to {cores} (the cores "
                f"this process may use) and its decode count one too, or None.",
                parameter="threads",
            )
        if threads is None:
            return cls(prefill=cores)
        if not _is_count(threads, cores):
            raise InputError(
                f"threads must be a whole number from 1 to {cores} (the cores this process may use), got {threads!r}.",
                parameter="threads",
            )
        return cls(int(threads), int(threads))

    def with_decode(self, count: int) -> "ThreadPlan":
        """This plan with `count` BLAS threads for decode steps."""
        return replace(self, decode=count)


def _is_count(value, cores: int) -> bool:
    return is_int(value) and 1 <= value <= cores


def fastest_matrix_vector_threads(matrices, most: int, passes: int = 3) -> int:
    """The thread count (1, half, or all of `most`) with the lowest median time for x @ W.T over every matrix.

    matrices: [out, in] arrays, together larger than the CPU caches, so the pass reads memory as decode does.
    """
    candidates = sorted({1, max(1, most // 2), most})
    row = matrices[0][:1] * 0  # [1, in] in the matrices' dtype and on their device
    timings = {}
    for count in candidates:
        with blas_threads(count):
            times = []
            for _ in range(passes + 1):  # the first pass wakes the threads up and is not counted
                started = time.perf_counter()
                for matrix in matrices:
                    row @ matrix.T
                times.append(time.perf_counter() - started)
        timings[count] = sorted(times[1:])[len(times[1:]) // 2]
    return min(timings, key=timings.get)


_controller = None


@contextmanager
def blas_threads(count: int):
    """Limit the BLAS library NumPy uses to `count` threads inside the block (through threadpoolctl)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    with _controller.limit(limits=count, user_api="blas"):
        yield


class RowPool:
    """A few threads for a prompt's elementwise work (LayerNorm, GELU, adds) and attention blocks.

    BLAS spreads each matrix product over the cores, but NumPy's ufuncs run on one core. They release the GIL,
    though, so Python threads that each take a block of rows do run at the same time. A pool of 1 (CuPy, or
    threads=1) runs everything in the calling thread.
    """

    def __init__(self, workers: int, block_rows: int = ROW_BLOCK):
        self.workers = workers
        self.block_rows = block_rows
        self._executor = None  # started on first use

    def rows(self, function, count: int):
        """function(start, stop) over row blocks covering 0 .. count-1, for elementwise work (no BLAS inside, so
        BLAS keeps its threads: switching them costs more than it saves); a few rows (a decode step) run inline."""
        if count < 2 * self.block_rows or self.workers == 1:
            function(0, count)
            return
        blocks = [(start, min(start + self.block_rows, count)) for start in range(0, count, self.block_rows)]
        self._share(lambda block: function(*block), blocks)

    def run(self, function, items):
        """function(item) for every item, which may call BLAS (attention blocks); returns when all are done.
        BLAS gets one thread meanwhile: the pool is the parallelism. One item, or a pool of 1, runs inline."""
        items = list(items)
        if self.workers == 1 or len(items) == 1:
            for item in items:
                function(item)
            return
        with blas_threads(1):
            self._share(function, items)

    def _share(self, function, items: list):
        """function(item) for every item on all workers (this thread included), each taking the next item when it
        is done; returns when all are done."""
        pending, lock = iter(items), threading.Lock()

        def work():
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                function(item)

        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="neo_numpy")
        helpers = [self._executor.submit(work) for _ in range(self.workers - 1)]
        work()
        for helper in helpers:
            helper.result()


INLINE = RowPool(1)  # runs everything in the calling thread: the default pool of the layer functions
