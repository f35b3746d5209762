"""Load GPT-Neo's weights from a checkpoint folder, checking every name and shape against the config.

A folder holds config.json and either model.safetensors or model.safetensors.index.json plus its shards.
Names follow transformers' GPTNeoForCausalLM (its state_dict keys), for example
"transformer.h.0.attn.attention.q_proj.weight". Linear weights stay in PyTorch's [out, in] layout: y = x @ W.T + b.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import NeoConfig
from .errors import CheckpointError, InputError
from .paths import check_inside_folder, kind_of, read_bounded, shown
from .safetensors_reader import read_header, read_tensor
from .untrusted_json import parse_json, quoted

log = logging.getLogger(__name__)

BASE_PREFIX = "transformer."  # GPTNeoForCausalLM's names; a file saved from GPTNeoModel has them without it
IGNORED_SUFFIXES = ("attn.attention.bias", "attn.attention.masked_bias")  # causal-mask buffers in older files
MAX_INDEX_BYTES = 20_000_000  # 2.7B's index is 30 KB; the largest models on the Hub (thousands of tensors) ~2 MB


def _stacked_part(index: int, name: str) -> property:
    """Rows index*D .. (index+1)*D of qkv_proj_weight: reading gives a view, assigning copies into it."""

    def view(layer):  # [D, D]
        width = layer.qkv_proj_weight.shape[1]
        return layer.qkv_proj_weight[index * width : (index + 1) * width]

    def assign(layer, value):
        _copy_into(view(layer), value, name)

    return property(view, assign, doc=f"{name} [D, D]: a view of qkv_proj_weight; assigning copies into it.")


def _copy_into(target, value, name: str) -> None:
    """target[...] = value, for an array of the same kind, dtype and shape only: anything else is refused, never cast
    or broadcast, so a weight can only be replaced by a weight."""
    if not isinstance(value, type(target)) or value.dtype != target.dtype or value.shape != target.shape:
        raise InputError(
            f"{name} takes {_described(target)} (it is copied into the stacked q/k/v weight), got {_described(value)}."
        )
    target[...] = value


def _described(array) -> str:
    if not hasattr(array, "dtype") or not hasattr(array, "shape"):
        return f"a {type(array).__name__}"
    return f"a {type(array).__name__} of dtype {array.dtype} and shape {list(array.shape)}"


@dataclass
class LayerWeights:
    """One transformer block's parameters. Shapes for the 125M model (hidden 768, inner 3072) in comments.

    q, k and v are held once, stacked in qkv_proj_weight, so attention needs one product per layer.
    q_proj_weight, k_proj_weight and v_proj_weight are views of its three parts. Assigning any of the four copies
    the new values into the stacked array (same array kind, dtype and shape, else InputError), so a view taken
    earlier never goes stale. To update weights (training), write in place: `w -= step` or `w[...] = new`.
    """

    kind: str  # "global" or "local" attention
    ln_1_weight: object  # [768]
    ln_1_bias: object  # [768]
    qkv_proj_weight: object  # [2304, 768]: q, k and v stacked (no bias)
    out_proj_weight: object  # [768, 768]
    out_proj_bias: object  # [768]
    ln_2_weight: object  # [768]
    ln_2_bias: object  # [768]
    c_fc_weight: object  # [3072, 768]
    c_fc_bias: object  # [3072]
    c_proj_weight: object  # [768, 3072]
    c_proj_bias: object  # [768]

    q_proj_weight = _stacked_part(0, "q_proj_weight")  # [768, 768]
    k_proj_weight = _stacked_part(1, "k_proj_weight")  # [768, 768]
    v_proj_weight = _stacked_part(2, "v_proj_weight")  # [768, 768]

    def __setattr__(self, name, value):
        if name == "qkv_proj_weight" and name in self.__dict__:  # after construction: into the array the views see
            _copy_into(self.qkv_proj_weight, value, name)
        else:
            super().__setattr__(name, value)


@dataclass
class NeoWeights:
    wte: object  # [vocab, hidden]  token embeddings, also the output head (tied)
    wpe: object  # [positions, hidden]  position embeddings
    layers: list  # [LayerWeights] * num_layers
    ln_f_weight: object  # [hidden]
    ln_f_bias: object  # [hidden]
    lm_head_weight: object  # [vocab, hidden]: wte itself unless the file stores a separate lm_head.weight

    def __setattr__(self, name, value):
        """wte is also the output head when the two are tied: a new array for either would leave the other on the old
        one, so once set, wte and lm_head_weight are replaced by copying into their arrays (as q/k/v are)."""
        if name in TIED_FIELDS and name in self.__dict__:
            _copy_into(self.__dict__[name], value, name)
        else:
            object.__setattr__(self, name, value)


TIED_FIELDS = ("wte", "lm_head_weight")  # one array in a tied checkpoint


LAYER_TENSORS = {  # LayerWeights field -> (name inside "transformer.h.{i}.", shape from the config)
    "ln_1_weight": ("ln_1.weight", lambda c: (c.hidden_size,)),
    "ln_1_bias": ("ln_1.bias", lambda c: (c.hidden_size,)),
    "q_proj_weight": ("attn.attention.q_proj.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "k_proj_weight": ("attn.attention.k_proj.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "v_proj_weight": ("attn.attention.v_proj.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "out_proj_weight": ("attn.attention.out_proj.weight", lambda c: (c.hidden_size, c.hidden_size)),
    "out_proj_bias": ("attn.attention.out_proj.bias", lambda c: (c.hidden_size,)),
    "ln_2_weight": ("ln_2.weight", lambda c: (c.hidden_size,)),
    "ln_2_bias": ("ln_2.bias", lambda c: (c.hidden_size,)),
    "c_fc_weight": ("mlp.c_fc.weight", lambda c: (c.intermediate_size, c.hidden_size)),
    "c_fc_bias": ("mlp.c_fc.bias", lambda c: (c.intermediate_size,)),
    "c_proj_weight": ("mlp.c_proj.weight", lambda c: (c.hidden_size, c.intermediate_size)),
    "c_proj_bias": ("mlp.c_proj.bias", lambda c: (c.hidden_size,)),
}


QKV_FIELDS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")  # read into one stacked [3D, D] array


def expected_shapes(config: NeoConfig) -> dict:
    """Every tensor a GPT-Neo checkpoint must hold, name -> shape."""
    shapes = {
        "transformer.wte.weight": (config.vocab_size, config.hidden_size),
        "transformer.wpe.weight": (config.max_position_embeddings, config.hidden_size),
        "transformer.ln_f.weight": (config.hidden_size,),
        "transformer.ln_f.bias": (config.hidden_size,),
    }
    for i in range(config.num_layers):
        for name, shape_of in LAYER_TENSORS.values():
            shapes[f"transformer.h.{i}.{name}"] = shape_of(config)
    return shapes


def find_tensors(folder: Path) -> dict:
    """{name: TensorEntry} over model.safetensors, or over every shard listed in model.safetensors.index.json.

    model.safetensors may be a link to anywhere (the user put it there); every other file the loader reads must be
    a file of the folder (paths.check_inside_folder).
    """
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if kind_of(single) != "missing":
        return read_header(single)
    if kind_of(index) != "missing":
        return _read_sharded(index)
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.ckpt")):
        raise CheckpointError(
            f"{folder} holds only PyTorch pickle weights, which neo_numpy does not load (unpickling can run code); "
            "convert them with transformers: GPTNeoForCausalLM.from_pretrained(folder).save_pretrained(folder) "
            "writes model.safetensors."
        )
    raise CheckpointError(f"{folder} has no model.safetensors or model.safetensors.index.json.")


def read_shard_index(index: Path) -> dict:
    """The weight_map of a model.safetensors.index.json: {tensor name: shard file name}.

    Each shard must be a plain file name beside the index: an index is untrusted input, and a name such as
    "../../etc/passwd" or "/etc/passwd" would otherwise make the loader open a file the user never pointed at.
    """
    check_inside_folder(index, index.parent)
    text = read_bounded(index, MAX_INDEX_BYTES, "a sharded checkpoint needs its index")
    contents = parse_json(text, f"the safetensors index {index}")
    weight_map = contents.get("weight_map") if isinstance(contents, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise CheckpointError(
            f"{index} is not a safetensors index: it needs a weight_map from tensor names to shard files."
        )
    for shard in set(weight_map.values()):
        if not is_plain_file_name(shard):
            raise CheckpointError(
                f"{index} names the shard {quoted(shard)}, which is not a plain file name beside the index."
            )
    return weight_map


def is_plain_file_name(name: str) -> bool:
    """A name for a file in this very folder: no folder part, no "..", not absolute, no NUL byte."""
    return name not in ("", ".", "..") and not any(char in name for char in "/\\\0")


def _read_sharded(index: Path) -> dict:
    """{name: TensorEntry} over every shard the index lists; each shard holds exactly the tensors mapped to it."""
    weight_map = read_shard_index(index)
    entries = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index.parent / shard
        if kind_of(shard_path) == "missing":
            raise CheckpointError(f"{shard_path} is listed in {index.name} but missing.")
        check_inside_folder(shard_path, index.parent)
        for name, entry in read_header(shard_path).items():
            if weight_map.get(name) != shard:  # a second copy of a tensor, which would silently replace the first
                raise CheckpointError(
                    f"{shard_path} holds tensor {quoted(name)}, which {index.name} does not map to it."
                )
            entries[name] = entry
    missing = sorted(set(weight_map) - set(entries))
    if missing:
        raise CheckpointError(
            f"tensor {missing[0]!r} is listed in {index} but absent from its shard {weight_map[missing[0]]}."
        )
    return entries


def load_weights(folder: Path, config: NeoConfig, to_device) -> NeoWeights:
    """Read, check and place every tensor. `to_device` turns a float32 host array into the backend's array."""
    shapes = expected_shapes(config)
    entries = _gpt_neo_tensors(_canonical_names(find_tensors(folder), shapes, folder), shapes, folder)
    _check_names_and_shapes(entries, shapes, config, folder)

    def tensor(name):
        return to_device(read_tensor(entries[name], name))

    def layer(i, kind):  # block i's weights; q, k and v read into one stacked [3D, D] array
        names = {field: f"transformer.h.{i}.{name}" for field, (name, _) in LAYER_TENSORS.items()}
        qkv = to_device(np.concatenate([read_tensor(entries[names[field]], names[field]) for field in QKV_FIELDS]))
        fields = {field: tensor(name) for field, name in names.items() if field not in QKV_FIELDS}
        return LayerWeights(kind=kind, qkv_proj_weight=qkv, **fields)

    layers = [layer(i, kind) for i, kind in enumerate(config.attention_layers)]
    wte = tensor("transformer.wte.weight")
    lm_head_weight = tensor("lm_head.weight") if "lm_head.weight" in entries else wte
    return NeoWeights(
        wte=wte,
        wpe=tensor("transformer.wpe.weight"),
        layers=layers,
        ln_f_weight=tensor("transformer.ln_f.weight"),
        ln_f_bias=tensor("transformer.ln_f.bias"),
        lm_head_weight=lm_head_weight,
    )


def _canonical_names(entries: dict, shapes: dict, folder: Path) -> dict:
    """Drop the old mask buffers; give "transformer." to each GPT-Neo name that lacks it, as transformers does.

    A file saved from GPTNeoModel has no prefix at all, and transformers also loads a file where only some names
    lack it. The same tensor under both names is refused: nothing says which of the two copies is meant.
    """
    canonical = {}
    for name, entry in entries.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        full = BASE_PREFIX + name if BASE_PREFIX + name in shapes else name
        if full in canonical:
            raise CheckpointError(f"{folder} holds tensor {full!r} twice, with and without the {BASE_PREFIX!r} prefix.")
        canonical[full] = entry
    return canonical


def _gpt_neo_tensors(entries: dict, shapes: dict, folder: Path) -> dict:
    """The tensors GPT-Neo uses. Any other (a classifier's score.weight, say) is left out with one warning, as
    transformers leaves out the unexpected names of a file."""
    used = {name: entry for name, entry in entries.items() if name in shapes or name == "lm_head.weight"}
    unused = sorted(set(entries) - set(used))
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        log.warning(f"{shown(folder)}: tensor {quoted(unused[0])}{more} is not part of GPT-Neo and is ignored.")
    return used


def _check_names_and_shapes(entries: dict, shapes: dict, config: NeoConfig, folder: Path) -> None:
    """Every tensor GPT-Neo needs is there, with the shape the config implies.

    With tie_word_embeddings false transformers builds a separate output head, and fills it with random numbers
    when the file has no lm_head.weight; neo_numpy refuses that checkpoint instead.
    """
    allowed = dict(shapes, **{"lm_head.weight": (config.vocab_size, config.hidden_size)})
    missing = [name for name in shapes if name not in entries]
    if not config.tie_word_embeddings and "lm_head.weight" not in entries:
        missing.insert(0, "lm_head.weight")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{folder} is not a complete GPT-Neo checkpoint: tensor {missing[0]!r}{more} is missing.")
    for name, entry in entries.items():
        if entry.shape != allowed[name]:
            raise CheckpointError(
                f"tensor {name!r} in {entry.path} has shape {list(entry.shape)}, "
                f"but config.json implies {list(allowed[name])}."
            )
