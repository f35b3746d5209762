"""Generation against transformers' generate(): greedy ids, KV cache, left-padded batches, EOS, settings, sampling.

Every expected id sequence comes from transformers' GPTNeoForCausalLM.generate() on the same weights, or from
neo_numpy's own uncached forward pass; nothing is hard-coded from a previous run of neo_numpy.
"""

import copy
import dataclasses

import numpy as np
import pytest
from checkpoints import require
from conftest import expect_error, relative_error

import neo_numpy
from neo_numpy import InputError

require("torch")

import torch  # noqa: E402

CONFIG_NAMES = ["alternating", "local_first", "all_global"]
EOS = 50256
PROMPT = "EleutherAI has"
NEW_TOKENS = 120  # crosses the local windows (8 and 5) many times
BATCH_PROMPTS = ["The dog", "EleutherAI has a long history of", "Hello world, this is"]  # 6, 0 and 3 pads


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """transformers' generate() on two busy cores is much faster (and steadier) with one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dirs):
    return neo_numpy.load_tokenizer(checkpoint_dirs["alternating"])


def hf_generate(torch_model, ids, attention_mask=None, **settings):
    """transformers' generate() on int ids [B, T] (greedy unless told), as a NumPy int64 array."""
    ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
    settings.setdefault("do_sample", False)
    with torch.no_grad():
        out = torch_model.generate(torch.as_tensor(ids), attention_mask=torch.as_tensor(mask), **settings)
    return out.numpy().astype(np.int64)


@pytest.fixture(scope="module")
def greedy_references(torch_models, tokenizer):
    """name -> transformers' greedy [1, prompt + 120] for PROMPT, never stopping."""
    ids = [tokenizer.encode(PROMPT)]
    return {
        name: hf_generate(torch_models[name], ids, max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=EOS)
        for name in CONFIG_NAMES
    }


@pytest.fixture(scope="module")
def batch_inputs(tokenizer):
    ids, mask = tokenizer.encode_batch(BATCH_PROMPTS)
    pads = sorted((mask == 0).sum(axis=1).tolist())
    assert len(set(pads)) == 3 and pads[0] == 0, f"the batch should have three different pad lengths, got {pads}"
    return ids, mask


@pytest.fixture(scope="module")
def batch_references(torch_models, batch_inputs):
    """name -> transformers' greedy batched generate() of the left-padded batch, 40 new tokens, never stopping."""
    ids, mask = batch_inputs
    return {
        name: hf_generate(torch_models[name], ids, mask, max_new_tokens=40, eos_token_id=None, pad_token_id=EOS)
        for name in CONFIG_NAMES
    }


def first_new_occurrence(tokens, start):
    """Index k >= start of the first token of `tokens` that does not occur before position k."""
    tokens = list(tokens)
    return next(k for k in range(start, len(tokens)) if tokens[k] not in tokens[:k])


# --------------------------------------------------------------------------- greedy parity


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_greedy_matches_transformers(neo_models, greedy_references, tokenizer, name):
    prompt = tokenizer.encode(PROMPT)
    reference = greedy_references[name]
    assert reference.shape == (1, len(prompt) + NEW_TOKENS)
    ours = neo_models[name].generate(np.array([prompt]), max_new_tokens=NEW_TOKENS, eos_token_id=None)
    assert ours.dtype == np.int64
    assert ours.shape == reference.shape
    mismatch = np.flatnonzero(ours[0] != reference[0])
    assert mismatch.size == 0, f"{name}: first difference at position {mismatch[:1].tolist()}"
    assert len(set(ours[0, len(prompt) :].tolist())) > 10  # a real continuation, not one token repeated


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_greedy_with_the_real_eos_matches_transformers(neo_models, torch_models, tokenizer, name):
    """The default EOS (the config's 50256) and transformers' generate() with eos_token_id=50256 agree."""
    prompt = tokenizer.encode("The dog")
    reference = hf_generate(torch_models[name], [prompt], max_new_tokens=40, eos_token_id=EOS, pad_token_id=EOS)
    ours = neo_models[name].generate(np.array([prompt]), max_new_tokens=40)
    assert ours.shape == reference.shape and (ours == reference).all()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_repetition_penalty_matches_transformers(neo_models, torch_models, tokenizer, name):
    prompt = tokenizer.encode("The dog")
    settings = dict(max_new_tokens=40, repetition_penalty=1.4)
    reference = hf_generate(torch_models[name], [prompt], eos_token_id=None, pad_token_id=EOS, **settings)
    ours = neo_models[name].generate(np.array([prompt]), eos_token_id=None, **settings)
    assert (ours == reference).all()
    plain = neo_models[name].generate(np.array([prompt]), eos_token_id=None, max_new_tokens=40)
    assert not (plain == ours).all(), "the penalty changed nothing: the test would not see it ignored"


# --------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_kv_cache_decode_equals_recomputing_from_scratch(neo_models, tokenizer, name):
    """Each decode step's logits through new_cache/step equal a cache-free pass over the whole prefix (rel err < 1e-5).

    The cache-free logits come from forward() on the final sequence (position t of a causal model sees exactly the
    prefix up to t), and every 10 steps also from a fresh prefill of the growing prefix.
    """
    model = neo_models[name]
    xp, to_host = model.backend.xp, model.backend.to_host
    prompt = tokenizer.encode(PROMPT)
    sequence, steps = list(prompt), 100
    cache = model.new_cache(1, len(sequence) + steps)
    logits = model.step(
        xp.asarray([sequence]),
        xp.asarray([list(range(len(sequence)))]),
        xp.ones((1, len(sequence)), dtype=bool),
        cache,
        last_positions=1,
    )
    cached = []
    for step in range(steps):
        cached.append(to_host(logits)[0, -1])  # [V]
        if step % 10 == 9:  # recompute this prefix from scratch, with a cache that starts empty
            fresh = model.step(
                xp.asarray([sequence]),
                xp.asarray([list(range(len(sequence)))]),
                xp.ones((1, len(sequence)), dtype=bool),
                model.new_cache(1, len(sequence)),
                last_positions=1,
            )
            error = relative_error(cached[-1], to_host(fresh)[0, -1])
            assert error < 1e-5, f"{name}: step {step} (position {len(sequence)}) relative error {error:.2e}"
        token = int(cached[-1].argmax())
        sequence.append(token)
        logits = model.step(
            xp.asarray([[token]]),
            xp.asarray([[len(sequence) - 1]]),
            xp.ones((1, 1), dtype=bool),
            cache,
            last_positions=1,
        )
    assert cache.length == len(sequence)
    recomputed = model.forward(np.array([sequence]))[0, len(prompt) - 1 : -1]  # [steps, V]
    cached = np.stack(cached)
    errors = [relative_error(cached[step], recomputed[step]) for step in range(steps)]
    worst = int(np.argmax(errors))
    print(f"\n[kv cache] {name}: worst relative error over {steps} steps {errors[worst]:.2e} (step {worst})")
    assert errors[worst] < 1e-5, f"{name}: step {worst} relative error {errors[worst]:.2e}"
    assert (cached.argmax(axis=-1) == recomputed.argmax(axis=-1)).all()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_local_layer_cache_memory_is_bounded(neo_models, torch_models, name):
    model = neo_models[name]
    reference_config = torch_models[name].config
    kinds = reference_config.attention_layers  # transformers' own expansion of attention_types
    assert len(model.config.attention_layers) == len(kinds)
    cache = model.new_cache(1, 400)
    assert len(cache.layers) == len(kinds)
    heads, head_dim = reference_config.num_heads, reference_config.hidden_size // reference_config.num_heads
    for index, kind in enumerate(kinds):
        slots = reference_config.window_size if kind == "local" else 400
        assert cache.layers[index].keys.shape == (1, heads, slots, head_dim), f"layer {index} ({kind})"
        assert cache.layers[index].values.shape == (1, heads, slots, head_dim), f"layer {index} ({kind})"


# --------------------------------------------------------------------------- left-padded batches


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_left_padded_batch_matches_rows_alone_and_transformers(
    neo_models, batch_inputs, batch_references, tokenizer, name
):
    ids, mask = batch_inputs
    model = neo_models[name]
    ours = model.generate(ids, mask, max_new_tokens=40, eos_token_id=None)
    reference = batch_references[name]
    assert ours.shape == reference.shape == (3, ids.shape[1] + 40)
    assert (ours == reference).all(), f"{name}: rows differ: {np.flatnonzero((ours != reference).any(axis=1)).tolist()}"
    assert (ours[:, : ids.shape[1]] == ids).all()  # the padded prompt comes back as it was given
    for row, text in enumerate(BATCH_PROMPTS):
        alone = model.generate(np.array([tokenizer.encode(text)]), max_new_tokens=40, eos_token_id=None)
        assert (ours[row, -40:] == alone[0, -40:]).all(), f"{name}: row {row} differs from the same prompt alone"


def test_right_padded_mask_is_refused(neo_models):
    ids = np.array([[464, 3290, 50256]])
    with pytest.raises(InputError):
        neo_models["alternating"].generate(ids, np.array([[1, 1, 0]]), max_new_tokens=3)


# --------------------------------------------------------------------------- stopping at EOS


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_generation_stops_right_after_eos(neo_models, torch_models, greedy_references, tokenizer, name):
    """Take a token X that greedy emits (first at step k > 2), make it the EOS: generation ends with it at step k."""
    prompt = tokenizer.encode(PROMPT)
    new = greedy_references[name][0, len(prompt) :]
    k = first_new_occurrence(new, 3)
    eos = int(new[k])
    ours = neo_models[name].generate(np.array([prompt]), max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    assert ours[0].tolist() == prompt + new[: k + 1].tolist()
    reference = hf_generate(torch_models[name], [prompt], max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=eos)
    assert ours.shape == reference.shape and (ours == reference).all()
    steps = list(neo_models[name].generate_tokens(np.array([prompt]), max_new_tokens=NEW_TOKENS, eos_token_id=eos))
    assert len(steps) == k + 1 and int(steps[-1][0]) == eos


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_finished_batch_rows_are_padded_with_eos(neo_models, torch_models, batch_inputs, batch_references, name):
    """EOS = a token that row 0 emits: row 0 then repeats it, like transformers with pad_token_id = eos."""
    ids, mask = batch_inputs
    unstopped = batch_references[name][:, ids.shape[1] :]  # [3, 40]
    eos = int(unstopped[0, first_new_occurrence(unstopped[0], 2)])
    ours = neo_models[name].generate(ids, mask, max_new_tokens=40, eos_token_id=eos)
    reference = hf_generate(torch_models[name], ids, mask, max_new_tokens=40, eos_token_id=eos, pad_token_id=eos)
    assert ours.shape == reference.shape and (ours == reference).all()

    new = ours[:, ids.shape[1] :]
    firsts = [list(row).index(eos) if eos in row else None for row in unstopped]
    expected_length = 40 if None in firsts else max(firsts) + 1
    assert new.shape[1] == expected_length
    for row, first in enumerate(firsts):
        if first is None:
            assert (new[row] == unstopped[row]).all()
        else:
            assert (new[row, : first + 1] == unstopped[row, : first + 1]).all()
            assert (new[row, first:] == eos).all(), f"row {row} is not padded with EOS after it finished"


def test_batch_stops_when_every_row_has_finished(neo_models, torch_models, batch_inputs, batch_references):
    """EOS = a token every row emits, at different steps: generation ends when the last row emits it."""
    ids, mask = batch_inputs
    for name in CONFIG_NAMES:
        unstopped = batch_references[name][:, ids.shape[1] :]
        common = set(unstopped[0].tolist()) & set(unstopped[1].tolist()) & set(unstopped[2].tolist())
        candidates = [(token, [list(row).index(token) for row in unstopped]) for token in sorted(common)]
        candidates = [(token, firsts) for token, firsts in candidates if len(set(firsts)) > 1 and max(firsts) < 39]
        if candidates:
            break
    else:
        pytest.fail("no test config emits one token in every batch row; choose other prompts")
    eos, firsts = candidates[0]
    ours = neo_models[name].generate(ids, mask, max_new_tokens=40, eos_token_id=eos)
    reference = hf_generate(torch_models[name], ids, mask, max_new_tokens=40, eos_token_id=eos, pad_token_id=eos)
    assert ours.shape == reference.shape == (3, ids.shape[1] + max(firsts) + 1)
    assert (ours == reference).all()
    for row, first in enumerate(firsts):
        assert (ours[row, ids.shape[1] + first :] == eos).all()


def test_eos_none_never_stops(neo_models, greedy_references, tokenizer):
    """A model whose config EOS is a token greedy emits stops there by default, and never with eos_token_id=None."""
    name = "alternating"
    prompt = tokenizer.encode(PROMPT)
    new = greedy_references[name][0, len(prompt) :]
    eos = int(new[first_new_occurrence(new, 3)])
    model = copy.copy(neo_models[name])
    model.config = dataclasses.replace(model.config, eos_token_id=eos)
    stopped = model.generate(np.array([prompt]), max_new_tokens=NEW_TOKENS)
    assert stopped.shape[1] < len(prompt) + NEW_TOKENS and stopped[0, -1] == eos
    never = model.generate(np.array([prompt]), max_new_tokens=NEW_TOKENS, eos_token_id=None)
    assert never.shape == (1, len(prompt) + NEW_TOKENS)
    assert (never[0, len(prompt) :] == eos).sum() >= 1
    assert (never == greedy_references[name]).all()


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_min_new_tokens_holds_eos_back(neo_models, torch_models, greedy_references, tokenizer, name):
    prompt = tokenizer.encode(PROMPT)
    eos = int(greedy_references[name][0, len(prompt)])  # the very first greedy token
    model = neo_models[name]
    at_once = model.generate(np.array([prompt]), max_new_tokens=20, eos_token_id=eos)
    assert at_once[0].tolist() == prompt + [eos]
    held = model.generate(np.array([prompt]), max_new_tokens=20, eos_token_id=eos, min_new_tokens=3)
    assert held.shape[1] >= len(prompt) + 4
    assert eos not in held[0, len(prompt) : len(prompt) + 3].tolist()
    reference = hf_generate(
        torch_models[name], [prompt], max_new_tokens=20, min_new_tokens=3, eos_token_id=eos, pad_token_id=eos
    )
    assert held.shape == reference.shape and (held == reference).all()


# --------------------------------------------------------------------------- refusing bad input


def test_prompt_plus_new_tokens_beyond_the_context(neo_models, torch_models):
    model = neo_models["alternating"]
    assert model.config.max_position_embeddings == 512
    prompt = np.random.default_rng(0).integers(0, 50000, size=(1, 510))
    with pytest.raises(InputError) as error:
        model.generate(prompt[:, :500], max_new_tokens=14)
    message = str(error.value)
    assert "500" in message and "14" in message and "512" in message
    # context + 1 fits: the last new token is never fed back, and transformers computes it too
    reference = hf_generate(torch_models["alternating"], prompt, max_new_tokens=3, eos_token_id=None, pad_token_id=EOS)
    ours = model.generate(prompt, max_new_tokens=3, eos_token_id=None)
    assert ours.shape == (1, 513) and (ours == reference).all()


@pytest.mark.parametrize(
    "setting",
    [
        dict(temperature=0),
        dict(temperature=-1),
        dict(temperature=float("nan")),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(top_k=2.5),
        dict(repetition_penalty=0),
        dict(repetition_penalty=-1.0),
        dict(max_new_tokens=0),
        dict(max_new_tokens=-5),
        dict(min_new_tokens=-1),
        dict(min_new_tokens=30),
    ],
    ids=lambda setting: "-".join(f"{k}={v}" for k, v in setting.items()),
)
def test_invalid_settings_raise_input_error(neo_models, setting):
    settings = {**dict(max_new_tokens=10, do_sample=True), **setting}
    with pytest.raises(InputError):
        neo_models["alternating"].generate(np.array([[464, 3290]]), **settings)
    with pytest.raises(InputError):  # before any work: the generator refuses on its first step
        next(iter(neo_models["alternating"].generate_tokens(np.array([[464, 3290]]), **settings)))


@pytest.mark.parametrize(
    "ids",
    [np.array([[464, 50257]]), np.array([[-1, 3290]]), np.zeros((1, 0), np.int64), np.array([[1.5, 2.0]])],
    ids=["id-too-large", "negative-id", "empty", "floats"],
)
def test_invalid_prompt_ids_raise_input_error(neo_models, ids):
    with pytest.raises(InputError):
        neo_models["alternating"].generate(ids, max_new_tokens=3)


# --------------------------------------------------------------------------- sampling and streaming


def test_seeded_sampling_is_repeatable(neo_models, tokenizer):
    model = neo_models["local_first"]
    prompt = np.array([tokenizer.encode(PROMPT)])
    settings = dict(max_new_tokens=30, do_sample=True, temperature=1.5, top_k=0, eos_token_id=None)
    first = model.generate(prompt, seed=1234, **settings)
    again = model.generate(prompt, seed=1234, **settings)
    other = model.generate(prompt, seed=4321, **settings)
    greedy = model.generate(prompt, max_new_tokens=30, eos_token_id=None)
    assert (first == again).all()
    assert not (first == other).all()
    assert not (first == greedy).all()


def test_sampling_with_top_k_1_is_greedy(neo_models, tokenizer):
    model = neo_models["alternating"]
    prompt = np.array([tokenizer.encode(PROMPT)])
    sampled = model.generate(
        prompt, max_new_tokens=30, do_sample=True, top_k=1, temperature=2.0, seed=7, eos_token_id=None
    )
    greedy = model.generate(prompt, max_new_tokens=30, eos_token_id=None)
    assert (sampled == greedy).all()


def test_sampled_rows_of_a_batch_are_independent(neo_models, tokenizer):
    """The same prompt twice in one sampled batch gives two different continuations (each row draws its own)."""
    model = neo_models["all_global"]
    prompt = np.array([tokenizer.encode(PROMPT)] * 2)
    out = model.generate(prompt, max_new_tokens=20, do_sample=True, temperature=1.5, top_k=0, seed=3, eos_token_id=None)
    assert not (out[0] == out[1]).all()


def test_stream_yields_the_decoded_ids_without_the_final_eos(neo_models, greedy_references, tokenizer):
    name = "alternating"
    prompt = tokenizer.encode(PROMPT)
    new = greedy_references[name][0, len(prompt) :]
    k = first_new_occurrence(new, 10)
    eos = int(new[k])
    pieces = list(neo_models[name].stream(PROMPT, max_new_tokens=NEW_TOKENS, eos_token_id=eos))
    assert "".join(pieces) == tokenizer.decode(new[:k].tolist())
    # token ids work as a prompt too, and with no EOS the whole continuation comes out
    everything = "".join(neo_models[name].stream(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=None))
    assert everything == tokenizer.decode(new.tolist())


# ---------------------------------------------------------------------------------- hostile generation inputs


@pytest.mark.parametrize("seed", ["abc", -1, 1.5, True])
@pytest.mark.parametrize("do_sample", [False, True])
def test_seed_is_checked_even_when_greedy(small_model, seed, do_sample):
    with expect_error(InputError, "seed"):
        small_model.generate([[464, 3290]], max_new_tokens=2, do_sample=do_sample, seed=seed)


@pytest.mark.parametrize("eos", [-1, 50257, 10**20, 1.5, "50256"])
def test_eos_outside_the_vocabulary_with_min_new_tokens(small_model, eos):
    with expect_error(InputError, "eos_token_id"):
        small_model.generate([[464, 3290]], max_new_tokens=3, min_new_tokens=2, eos_token_id=eos)


def test_tiny_temperature_is_refused_not_nan(small_model):
    with expect_error(InputError, "temperature"):
        small_model.generate([[464, 3290]], max_new_tokens=3, do_sample=True, temperature=1e-45, seed=0)
    small = small_model.generate([[464, 3290]], max_new_tokens=3, do_sample=True, temperature=1e-6, seed=0)
    greedy = small_model.generate([[464, 3290]], max_new_tokens=3)
    assert small.tolist() == greedy.tolist()  # a small but safe temperature is (near) greedy, not garbage


@pytest.mark.parametrize("prompt", [[[464, 3290], [1, 2]], [[1, 2], [3]], 3.5], ids=["2-D", "ragged", "float"])
def test_stream_needs_one_sequence(small_model, prompt):
    with expect_error(InputError, "one sequence"):
        next(small_model.stream(prompt, max_new_tokens=2))


def test_stream_needs_a_tokenizer(small_model):
    with expect_error(InputError, "tokenizer"):
        next(small_model.stream("The dog", tokenizer="abc", max_new_tokens=2))
