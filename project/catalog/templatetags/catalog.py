"""Template helpers of the demo's pages."""

from django import template

register = template.Library()

#: How an explanation names the interaction: "because you loved …".
VERBS = {"love": "loved", "like": "liked", "view": "watched", "purchase": "bought"}


@register.filter
def because(explanation) -> str:
    """``[Explanation, …]`` → "because you loved Star Wars and liked Alien"."""
    parts = []
    previous = None
    for item in explanation or []:
        verb = VERBS.get(item.kind, "rated")
        parts.append(str(item.object) if verb == previous else f"{verb} {item.object}")
        previous = verb
    if not parts:
        return ""
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Because you {listed}"


@register.filter
def percent(value) -> str:
    """A cosine similarity or score in 0–1 as a whole percentage."""
    if value is None:
        return ""
    return f"{round(float(value) * 100)} %"
