"""The command line's argument types: each refuses a bad value in one line that says what was
expected."""

import argparse


def layer_widths(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of layer widths; "
                                         f"expected positive integers such as 256,256")
    return sizes


def column_names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 0")
    return int(text)


def seed_number(text: str) -> int:
    """A seed in the one range every surface takes (the service's: 0 to 2**63 - 1)."""
    from serving.core.noise import MAX_SEED
    if not text.isdigit() or int(text) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a seed from 0 to 2**63 - 1")
    return int(text)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def number_or_nan(text: str) -> float:
    """The number text spells, or NaN, which every range check below refuses."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def finite_weight(text: str) -> float:
    value = number_or_nan(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ≥ 0")
    return value


def positive_number(text: str) -> float:
    value = number_or_nan(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number > 0")
    return value


def decay(text: str) -> float:
    value = number_or_nan(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decay in [0, 1) (0 keeps the last "
                                         f"weights)")
    return value


def contamination(text: str) -> float | str:
    if text == "auto":
        return text
    share = number_or_nan(text)
    if not 0.0 <= share < 0.5:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a fraction in [0, 0.5) "
                                         f"(the share of anomalies expected in the rows)")
    return share


def share(text: str) -> float:
    """A false-positive rate: a fraction strictly between 0 and 1."""
    value = number_or_nan(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share strictly between 0 and 1 "
                                         f"(0.01 flags 1% of the validation rows)")
    return value
