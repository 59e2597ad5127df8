"""Template helpers of the demo's pages."""

from django import template

register = template.Library()

#: How an explanation names the interaction: "because you loved …".
VERBS = {"love": "loved", "like": "liked", "view": "watched", "purchase": "bought"}


def _listed(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@register.filter
def because(explanation) -> str:
    """``[Explanation, …]`` → "Because you loved Alien and Heat, and watched Fargo"."""
    groups: dict[str, list[str]] = {}
    for item in explanation or []:
        groups.setdefault(VERBS.get(item.kind, "rated"), []).append(str(item.object))
    if not groups:
        return ""
    return "Because you " + ", and ".join(
        f"{verb} {_listed(titles)}" for verb, titles in groups.items()
    )


@register.filter
def percent(value) -> str:
    """A cosine similarity or score in 0–1 as a whole percentage."""
    if value is None:
        return ""
    return f"{round(float(value) * 100)} %"
