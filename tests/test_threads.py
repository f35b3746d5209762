"""The BLAS thread plan: prefill on every core, decode measured once; results do not depend on it."""

import numpy as np
import pytest
from conftest import expect_error

import neo_numpy
from neo_numpy import InputError
from neo_numpy.threads import ThreadPlan, available_cores, fastest_matrix_vector_threads


def test_default_plan_uses_every_core_for_prefill_and_measures_decode():
    plan = ThreadPlan.choose()
    assert plan.prefill == available_cores() and plan.decode is None
    assert ThreadPlan.choose(1) == ThreadPlan(1, 1)
    assert ThreadPlan.choose(available_cores()) == ThreadPlan(available_cores(), available_cores())
    assert ThreadPlan.choose(ThreadPlan(2, 1)) == ThreadPlan(2, 1)
    with pytest.raises(neo_numpy.InputError, match="at least 1, got 0"):
        ThreadPlan.choose(0)
    with pytest.raises(neo_numpy.InputError, match="only"):  # more threads than cores only wait for each other
        ThreadPlan.choose(available_cores() + 1)


def test_measured_decode_count_is_a_candidate_and_kept():
    matrices = [np.ones((64, 32), np.float32) for _ in range(3)]
    assert fastest_matrix_vector_threads(matrices, 4) in (1, 2, 4)
    assert ThreadPlan(4, None).with_decode(2) == ThreadPlan(4, 2)


def test_decode_count_is_measured_once_before_decoding(checkpoint_dirs):
    model = neo_numpy.load_model(checkpoint_dirs["alternating"])
    candidates = {1, max(1, available_cores() // 2), available_cores()}
    assert model.threads.decode is None
    model.forward(np.arange(20)[None])  # a prompt is matrix-matrix work: nothing measured
    assert model.threads.decode is None
    model.generate(np.arange(5)[None], max_new_tokens=1)  # one token: no decode step, nothing measured
    assert model.threads.decode is None
    model.generate(np.arange(5)[None], max_new_tokens=2)  # generation measures before its first decode step
    assert model.threads.decode in candidates
    assert model.measure_decode_threads() in candidates  # the same step, called on its own


def test_a_fixed_decode_count_is_never_measured(checkpoint_dirs, monkeypatch):
    model = neo_numpy.load_model(checkpoint_dirs["alternating"], threads=1)
    monkeypatch.setattr(model, "measure_decode_threads", lambda: pytest.fail("measured a fixed count"))
    model.generate(np.arange(5)[None], max_new_tokens=3)
    assert model.threads == ThreadPlan(1, 1)


def test_thread_counts_do_not_change_results(checkpoint_dirs):
    ids = np.random.default_rng(0).integers(0, 50257, (2, 40))
    one = neo_numpy.load_model(checkpoint_dirs["local_first"], threads=1)
    many = neo_numpy.load_model(
        checkpoint_dirs["local_first"], threads=ThreadPlan(available_cores(), available_cores())
    )
    np.testing.assert_allclose(one.forward(ids), many.forward(ids), rtol=0, atol=1e-4)
    assert np.array_equal(
        one.generate(ids, max_new_tokens=30, eos_token_id=None),
        many.generate(ids, max_new_tokens=30, eos_token_id=None),
    )


# -------------------------------------------------------------------------------------- hostile thread counts


@pytest.mark.parametrize("threads", ["abc", 1.5, True, 0])
def test_threads_must_be_a_count(folder, threads):
    with expect_error(InputError, "threads", repr(threads)):
        neo_numpy.load_model(folder, threads=threads)
