"""The report's reading of its own figures (placeholder while the figures are gathered)."""


def reading(q: dict, a: dict, s: dict, met: dict) -> str:
    return "## Reading\n\n(to be written)\n"
