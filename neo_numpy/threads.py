"""How many BLAS threads each kind of product gets.

Prefill multiplies matrices by matrices ([T, D] @ [D, F]): compute-bound, so it gets every core. A decode step
multiplies one row by each weight matrix ([1, D] @ [D, F]): memory-bound, and whether more threads help depends
on the machine and on what else runs on it. Measured on a 2-core machine: on an idle machine two threads read
the weights 1.5x faster than one (11.4 vs 7.7 GB/s), while next to another busy process two threads made the same
product 30x slower than one (spinning threads fight for the cores). So the decode count is not guessed: before its
first decode step, generation calls NeoModel.measure_decode_threads, which times a pass over the model's own MLP
weights with each candidate count and keeps the fastest.
`python benchmarks/threads.py` shows the same measurement in a table.

BLAS threads only speed up the matrix products. A prompt's elementwise work (LayerNorm, GELU, bias and residual
adds) and its attention blocks go to `RowPool`, a few Python threads: NumPy releases the GIL inside ufuncs and
BLAS calls, so blocks of rows do run on several cores at once. Its threads sleep while they wait for work (BLAS
threads spin for a while).
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
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
    prefill: int  # BLAS threads for matrix-matrix work (prompts)
    decode: int = None  # BLAS threads for matrix-vector work (decode steps); None: NeoModel measures it once

    @classmethod
    def choose(cls, threads=None) -> "ThreadPlan":
        """None: all cores for prefill, decode measured; an int: that many for both; a ThreadPlan as it is."""
        if isinstance(threads, ThreadPlan):
            return threads
        if threads is None:
            return cls(prefill=available_cores())
        if not is_int(threads) or threads < 1:
            raise InputError(f"threads must be None or a whole number of at least 1, got {threads!r}.")
        if threads > available_cores():  # more BLAS threads than cores only make them wait for each other
            raise InputError(f"threads is {threads}, but this process may use only {available_cores()} cores.")
        return cls(int(threads), int(threads))

    def with_decode(self, count: int) -> "ThreadPlan":
        """This plan with `count` BLAS threads for decode steps."""
        return replace(self, decode=count)


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
        """function(start, stop) over row blocks covering 0 .. count-1; a few rows (a decode step) run inline."""
        if count < 2 * self.block_rows or self.workers == 1:
            function(0, count)
            return
        blocks = [(start, min(start + self.block_rows, count)) for start in range(0, count, self.block_rows)]
        self.run(lambda block: function(*block), blocks)

    def run(self, function, items, blas_threads_each: int = None):
        """function(item) for every item, on all workers (this thread included), each taking the next item when
        it is done; returns when all are done. blas_threads_each limits BLAS inside (the pool is the parallelism)."""
        items = list(items)
        if self.workers == 1 or len(items) == 1:
            for item in items:
                function(item)
            return
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
        with blas_threads(blas_threads_each) if blas_threads_each else nullcontext():
            helpers = [self._executor.submit(work) for _ in range(self.workers - 1)]
            work()
            for helper in helpers:
                helper.result()
