"""How many BLAS threads each kind of product gets.

Prefill multiplies matrices by matrices ([T, D] @ [D, F]): compute-bound, more threads help. A decode step
multiplies one row by each weight matrix ([1, D] @ [D, F]): memory-bound, and on a small machine extra threads
mostly add synchronisation (measured here on 2 cores: a [1, 768] @ [768, 3072] product took 0.26 ms on one thread
and several ms on two). So the two get separate thread counts; `python benchmarks/threads.py` measures both.
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import InputError

MATRIX_VECTOR_ROWS = 8  # up to this many rows (batch x new positions) a product counts as matrix-vector work


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    prefill: int  # BLAS threads for matrix-matrix work (prompts, batches)
    decode: int  # BLAS threads for matrix-vector work (one token of one sequence)

    @classmethod
    def choose(cls, threads=None) -> "ThreadPlan":
        """None: all cores for prefill, and for decode 1 thread up to 2 cores, else half the cores (at most 8).
        An int uses that many for both; a ThreadPlan is taken as it is."""
        if isinstance(threads, ThreadPlan):
            return threads
        if threads is not None:
            if int(threads) < 1:
                raise InputError(f"threads must be at least 1, got {threads}.")
            return cls(int(threads), int(threads))
        cores = available_cores()
        return cls(prefill=cores, decode=1 if cores <= 2 else min(cores // 2, 8))

    def for_rows(self, rows: int) -> int:
        return self.decode if rows <= MATRIX_VECTOR_ROWS else self.prefill


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
