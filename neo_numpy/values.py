"""Type tests for values that come from users or from files, where Python's own types are too forgiving.

JSON's true and False are Python bools, and bool is a subclass of int: `isinstance(True, int)` holds, so a config
saying `"num_heads": true` would count as 1. These tests accept NumPy's integer and float types too.
"""

import numbers


def is_int(value) -> bool:
    """An integer, and not a bool (JSON's true would otherwise count as 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float, and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
