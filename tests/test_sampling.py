"""neo_numpy.sampling against transformers' logits processors, and unit tests for the classic sampler bugs.

The reference for every processor is transformers.generation.logits_process, chained in the order transformers'
generate() builds it: repetition penalty, min_new_tokens, then (when sampling) temperature, top-k, top-p.
"""

import numpy as np
import pytest
from checkpoints import require

from neo_numpy import GenerationSettings
from neo_numpy.errors import InputError
from neo_numpy.sampling import process_logits, sample

require("torch", "transformers", "scipy")

import torch  # noqa: E402
from scipy.stats import chisquare  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

VOCAB = 50257
EOS = 50256
BATCH = 4


def settings_for(
    do_sample=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, min_new_tokens=0, eos_token_id=EOS
):
    return GenerationSettings(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos_token_id,
    )


def transformers_chain(settings, prompt_length):
    """The processors transformers' generate() would build for these settings, in its order."""
    chain = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.eos_token_id is not None and settings.min_new_tokens > 0:
        chain.append(MinNewTokensLengthLogitsProcessor(prompt_length, settings.min_new_tokens, settings.eos_token_id))
    if settings.do_sample:
        if settings.temperature != 1.0:
            chain.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            chain.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            chain.append(TopPLogitsWarper(settings.top_p))
    return chain


def seen_tokens_of(history):
    """bool [B, V]: True for every token id that occurs in the row's history (what process_logits takes)."""
    seen = np.zeros((history.shape[0], VOCAB), dtype=bool)
    seen[np.arange(history.shape[0])[:, None], history] = True
    return seen


def random_case(seed, prompt_length=20, new_tokens=3):
    """float32 logits [B, V] ~ N(0, 3) and a history [B, prompt + new] with repeats and the EOS id in it."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((BATCH, VOCAB)) * 3.0).astype(np.float32)
    history = rng.integers(0, VOCAB, size=(BATCH, prompt_length + new_tokens), dtype=np.int64)
    history[:, 5] = history[:, 2]  # a repeated id must be penalised once, not twice
    history[0, 7] = EOS
    return logits, history


CASES = {
    # name: (settings, prompt length, new tokens so far)
    "greedy_penalty_min_new": (settings_for(do_sample=False, repetition_penalty=1.3, min_new_tokens=5), 20, 2),
    "greedy_min_new_reached": (settings_for(do_sample=False, min_new_tokens=3), 20, 3),
    "greedy_penalty_below_one": (settings_for(do_sample=False, repetition_penalty=0.8), 12, 0),
    "temperature_top_k_top_p": (settings_for(temperature=0.7, top_k=50, top_p=0.9), 20, 3),
    "hot_top_p_only": (settings_for(temperature=1.5, top_k=0, top_p=0.5), 16, 1),
    "top_k_only_with_penalty": (settings_for(top_k=10, repetition_penalty=1.2), 20, 3),
    "everything": (
        settings_for(temperature=0.6, top_k=200, top_p=0.95, repetition_penalty=1.5, min_new_tokens=8),
        20,
        4,
    ),
    "top_k_1": (settings_for(top_k=1), 8, 1),
    "cold_top_p_tiny": (settings_for(temperature=0.3, top_p=0.05), 8, 1),
    "no_eos_min_new": (settings_for(min_new_tokens=5, eos_token_id=None, top_p=0.8), 8, 1),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_process_logits_matches_transformers(case, seed):
    settings, prompt_length, new_tokens = CASES[case]
    logits, history = random_case(seed, prompt_length, new_tokens)

    ours = process_logits(logits.copy(), seen_tokens_of(history), new_tokens, settings)
    chain = transformers_chain(settings, prompt_length)
    with torch.no_grad():
        reference = chain(torch.as_tensor(history), torch.as_tensor(logits.copy())).numpy()

    assert ours.shape == reference.shape == (BATCH, VOCAB)
    assert ours.dtype == np.float32, f"processed logits must stay float32, got {ours.dtype}"
    ours_removed, reference_removed = np.isneginf(ours), np.isneginf(reference)
    assert (ours_removed == reference_removed).all(), (
        f"removed tokens differ at {np.argwhere(ours_removed != reference_removed)[:10].tolist()}"
    )
    kept = ~reference_removed
    assert kept.any(axis=-1).all()
    np.testing.assert_allclose(ours[kept], reference[kept], rtol=1e-6, atol=0)


def test_processors_do_not_modify_their_input():
    logits, history = random_case(3)
    before = logits.copy()
    process_logits(
        logits,
        seen_tokens_of(history),
        0,
        settings_for(temperature=0.5, top_k=20, top_p=0.9, repetition_penalty=1.3, min_new_tokens=2),
    )
    assert np.array_equal(logits, before)


def softmax(logits):
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def test_temperature_divides_the_logits():
    """T < 1 sharpens the distribution and T > 1 flattens it (multiplying would do the opposite)."""
    logits, history = random_case(4)
    base = softmax(logits.astype(np.float64)).max(axis=-1)
    cold = process_logits(logits, seen_tokens_of(history), 0, settings_for(temperature=0.5))
    hot = process_logits(logits, seen_tokens_of(history), 0, settings_for(temperature=2.0))
    assert (softmax(cold.astype(np.float64)).max(axis=-1) > base).all()
    assert (softmax(hot.astype(np.float64)).max(axis=-1) < base).all()
    np.testing.assert_allclose(cold, logits * 2.0, rtol=1e-6)
    np.testing.assert_allclose(hot, logits * 0.5, rtol=1e-6)


def test_top_k_then_top_p_in_sequence_not_union():
    """probabilities [0.4, 0.35, 0.25]: top-k=2 keeps {0, 1}; top-p=0.5 on *their* renormalised [0.53, 0.47] keeps {0}.

    top-p alone on the original distribution would keep {0, 1}, so the union (and the intersection) of the two
    filters is {0, 1}: only applying one after the other leaves token 0 alone.
    """
    logits = np.log(np.array([[0.4, 0.35, 0.25]], dtype=np.float32))
    nothing_seen = np.zeros(logits.shape, dtype=bool)  # no repetition penalty here
    no_eos = dict(eos_token_id=None)
    only_top_k = process_logits(logits, nothing_seen, 0, settings_for(top_k=2, **no_eos))
    only_top_p = process_logits(logits, nothing_seen, 0, settings_for(top_p=0.5, **no_eos))
    both = process_logits(logits, nothing_seen, 0, settings_for(top_k=2, top_p=0.5, **no_eos))
    assert np.isfinite(only_top_k[0]).tolist() == [True, True, False]
    assert np.isfinite(only_top_p[0]).tolist() == [True, True, False]
    assert np.isfinite(both[0]).tolist() == [True, False, False]


def test_top_p_keeps_the_smallest_nucleus():
    """[0.5, 0.3, 0.15, 0.05]: top_p 0.79 keeps the first two (0.8 >= 0.79), top_p 0.81 needs the third."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float64)).astype(np.float32)
    nothing_seen = np.zeros(logits.shape, dtype=bool)  # no repetition penalty here
    kept_79 = np.isfinite(process_logits(logits, nothing_seen, 0, settings_for(top_p=0.79, eos_token_id=None)))[0]
    kept_81 = np.isfinite(process_logits(logits, nothing_seen, 0, settings_for(top_p=0.81, eos_token_id=None)))[0]
    assert kept_79.tolist() == [True, True, False, False]
    assert kept_81.tolist() == [True, True, True, False]


def draw(logits_row, draws, seed):
    """`draws` samples from one distribution, through neo_numpy.sampling.sample with uniforms in (0, 1]."""
    rng = np.random.default_rng(seed)
    logits = np.repeat(np.asarray(logits_row, dtype=np.float32)[None, :], draws, axis=0)
    uniforms = (1.0 - rng.random(draws, dtype=np.float32)).astype(np.float32)
    tokens = np.asarray(sample(logits, uniforms))
    assert tokens.shape == (draws,)
    return tokens


def test_sampling_is_proportional_to_probability():
    probabilities = np.array([0.7, 0.2, 0.1])
    tokens = draw(np.log(probabilities), 20000, seed=0)
    counts = np.bincount(tokens, minlength=3)
    assert counts.sum() == 20000 and len(counts) == 3
    statistic, p_value = chisquare(counts, probabilities * 20000)
    assert p_value > 1e-3, f"frequencies {counts / 20000} are not [0.7, 0.2, 0.1] (chi2 {statistic:.1f})"
    np.testing.assert_allclose(counts / 20000, probabilities, atol=0.015)


def test_sampling_inside_the_nucleus_is_proportional_not_uniform():
    """top_p 0.9 on [0.6, 0.25, 0.1, 0.05] keeps three tokens, drawn as [0.6, 0.25, 0.1] / 0.95."""
    probabilities = np.array([0.6, 0.25, 0.1, 0.05])
    logits = np.log(probabilities).astype(np.float32)[None, :]
    nucleus = process_logits(logits, np.zeros(logits.shape, bool), 0, settings_for(top_p=0.9, eos_token_id=None))[0]
    assert np.isfinite(nucleus).tolist() == [True, True, True, False]
    tokens = draw(nucleus, 20000, seed=1)
    counts = np.bincount(tokens, minlength=4)
    assert counts[3] == 0
    expected = probabilities[:3] / probabilities[:3].sum() * 20000
    statistic, p_value = chisquare(counts[:3], expected)
    assert p_value > 1e-3, (
        f"frequencies {counts / 20000} inside the nucleus are not proportional (chi2 {statistic:.1f})"
    )


def test_a_token_with_probability_zero_is_never_drawn():
    logits = np.array([-np.inf, 1.0, -np.inf, 0.5, 2.0, -np.inf, -np.inf], dtype=np.float32)
    tokens = draw(logits, 5000, seed=2)
    assert set(np.unique(tokens).tolist()) == {1, 3, 4}
    # the extreme uniforms: 1.0 must pick the last possible token, a tiny one the first possible token
    extremes = np.array([1.0, np.finfo(np.float32).tiny, 1e-30, 0.999999], dtype=np.float32)
    chosen = np.asarray(sample(np.repeat(logits[None, :], 4, axis=0), extremes)).tolist()
    assert chosen[0] == 4 and chosen[1] == 1 and chosen[2] == 1 and chosen[3] == 4


def test_sampling_after_top_k_stays_inside_the_top_k():
    logits, history = random_case(5)
    filtered = process_logits(logits, seen_tokens_of(history), 0, settings_for(top_k=5, eos_token_id=None))
    allowed = [set(np.argsort(row)[-5:].tolist()) for row in logits]
    rng = np.random.default_rng(6)
    for _ in range(200):
        tokens = np.asarray(sample(filtered, (1.0 - rng.random(BATCH, dtype=np.float32)).astype(np.float32)))
        assert all(int(token) in allowed[row] for row, token in enumerate(tokens))


@pytest.mark.parametrize(
    "setting",
    [
        dict(temperature=10**400),  # no float holds it: OverflowError, were it converted carelessly
        dict(top_p=10**400),
        dict(repetition_penalty=10**400),
        dict(temperature=1e-300),  # 0 in float32, the logits' type: a division by zero
        dict(repetition_penalty=1e-300),
        dict(temperature=1e39),  # infinite in float32
        dict(temperature=float("inf")),
        dict(top_p=float("nan")),
    ],
    ids=lambda setting: "-".join(f"{k}={str(v)[:6]}" for k, v in setting.items()),
)
def test_settings_beyond_float32_are_one_input_error(setting):
    with pytest.raises(InputError) as error:
        GenerationSettings(**setting)
    message = str(error.value)
    assert message.startswith(next(iter(setting))) and len(message) < 200, message
