"""The BLAS thread plan: prefill on every core, decode measured once; results do not depend on it."""

from contextlib import nullcontext

import numpy as np
import pytest
from conftest import expect_error

import neo_numpy
import neo_numpy.model
from neo_numpy import InputError
from neo_numpy.threads import ThreadPlan, available_cores, fastest_matrix_vector_threads


def test_default_plan_uses_every_core_for_prefill_and_measures_decode():
    plan = ThreadPlan.choose()
    assert plan.prefill == available_cores() and plan.decode is None
    assert ThreadPlan.choose(1) == ThreadPlan(1, 1)
    assert ThreadPlan.choose(np.int64(1)) == ThreadPlan(1, 1) and type(ThreadPlan.choose(np.int64(1)).prefill) is int
    assert ThreadPlan.choose(available_cores()) == ThreadPlan(available_cores(), available_cores())
    assert ThreadPlan.choose(ThreadPlan(available_cores(), 1)) == ThreadPlan(available_cores(), 1)
    assert ThreadPlan.choose(ThreadPlan(1)) == ThreadPlan(1, None)


@pytest.mark.parametrize(
    "threads",
    [0, -1, available_cores() + 1, 100000, 1.0, 1.5, "2", True, [1]]
    + [ThreadPlan(0), ThreadPlan(100000), ThreadPlan(1, 0), ThreadPlan(1, available_cores() + 1)]
    + [ThreadPlan(1.5), ThreadPlan(1, "1"), ThreadPlan(None), ThreadPlan(True, 1)],
)
def test_every_bad_threads_value_is_refused_in_one_sentence_naming_threads(threads):
    with pytest.raises(neo_numpy.InputError, match=r"^threads (must be|is) .*\.$") as refused:
        ThreadPlan.choose(threads)
    assert f"from 1 to {available_cores()}" in str(refused.value) and "\n" not in str(refused.value)


def test_load_model_checks_a_thread_plan_before_reading_anything(tmp_path):
    with pytest.raises(neo_numpy.InputError, match="threads is ThreadPlan"):  # the folder does not even exist
        neo_numpy.load_model(tmp_path / "missing", threads=ThreadPlan(prefill=100000))


def test_measured_decode_count_is_a_candidate_and_kept():
    matrices = [np.ones((64, 32), np.float32) for _ in range(3)]
    assert fastest_matrix_vector_threads(matrices, 4) in (1, 2, 4)
    assert ThreadPlan(4, None).with_decode(2) == ThreadPlan(4, 2)


def test_decode_count_is_measured_once_before_the_first_few_row_step(checkpoint_dirs):
    model = neo_numpy.load_model(checkpoint_dirs["alternating"])
    candidates = {1, max(1, available_cores() // 2), available_cores()}
    assert model.threads.decode is None
    model.forward(np.arange(20)[None])  # 20 rows: matrix-matrix work, nothing measured
    assert model.threads.decode is None
    model.generate(np.arange(9)[None], max_new_tokens=1)  # a 9-row prompt and no decode step: nothing measured
    assert model.threads.decode is None
    model.generate(np.arange(9)[None], max_new_tokens=2)  # the first decode step (1 row) measures
    assert model.threads.decode in candidates
    assert model.measure_decode_threads() in candidates  # the same step, called on its own
    fresh = neo_numpy.load_model(checkpoint_dirs["alternating"])
    fresh.forward(np.arange(3)[None])  # 3 rows are matrix-vector work too, prompt or not
    assert fresh.threads.decode in candidates


def test_each_step_gets_its_count_from_its_rows(checkpoint_dirs, monkeypatch):
    model = neo_numpy.load_model(checkpoint_dirs["alternating"], threads=ThreadPlan(available_cores(), 1))
    used = []
    monkeypatch.setattr(neo_numpy.model, "blas_threads", lambda count: used.append(count) or nullcontext())
    model.generate(np.arange(8)[None], max_new_tokens=3)  # 8 rows, then 1 row twice
    model.generate(np.arange(12).reshape(3, 4), max_new_tokens=2)  # 12 rows, then 3 rows
    model.forward(np.arange(9)[None])  # 9 rows
    cores = available_cores()
    assert used == [1, 1, 1, cores, 1, cores]


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
