"""JSON from a checkpoint folder (config.json, a safetensors header, an index), parsed as untrusted input.

Python's json module is lenient where a checkpoint must not be: a repeated key silently keeps the last value,
and hostile text can make it raise ValueError (an integer of 5000 digits) or RecursionError (100,000 nested
brackets) instead of JSONDecodeError. `parse_json` turns every one of these into one CheckpointError sentence.
Numbers too large for a float (1e400) and NaN/Infinity come back as floats; the callers' type and range checks
refuse them where a value must be an int or finite.
"""

import json

from .errors import CheckpointError


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice."""


def _refuse_duplicate_keys(pairs: list) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


def parse_json(text, source: str):
    """Parse `text` (str or bytes), or raise one CheckpointError naming `source` (a file, or a file's header)."""
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except DuplicateKeyError as duplicate:
        raise CheckpointError(f"{source} names {duplicate.args[0]!r} twice.") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{source} is not UTF-8 text, so it is not valid JSON.") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{source} is not valid JSON ({error.msg} at character {error.pos}).") from None
    except ValueError:  # an integer with more digits than int() accepts
        raise CheckpointError(f"{source} is not valid JSON (it holds a number too long to read).") from None
    except RecursionError:
        raise CheckpointError(f"{source} is not valid JSON (its values are nested too deeply).") from None


LONGEST_QUOTED_VALUE = 80  # characters of an untrusted value repeated in a message


def quoted(value) -> str:
    """repr(value), cut short: a hostile file may hold a name or a list of millions of characters."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str()
        return "<a number too long to print>"
    return text if len(text) <= LONGEST_QUOTED_VALUE else text[: LONGEST_QUOTED_VALUE - 3] + "..."
