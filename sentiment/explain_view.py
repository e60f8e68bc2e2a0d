"""An `Explanation` for people: the text with its words coloured in a terminal, or a page of HTML.

Green pushes towards the predicted label, red away from it; the stronger the push (relative to
the text's strongest token), the stronger the colour.
"""

from __future__ import annotations

import html

from sentiment.explain import Explanation, strongest

# terminal: (strength at least, style) from the strongest down; below the last, plain text
_LEVELS = [(0.6, {"bold": True, "underline": True}), (0.25, {"bold": True}), (0.08, {})]
_COLOURS = {True: ("green", "bright_green"), False: ("red", "bright_red")}


def _strength(expl: Explanation) -> float:
    return max((abs(t["contribution"]) for t in expl.tokens), default=0.0) or 1.0


def headline(expl: Explanation) -> str:
    gap = "" if expl.completeness_gap is None else f"; completeness gap {expl.completeness_gap:+.2g}"
    if expl.rating is not None:
        return f"rating {expl.rating:.2f}  ({expl.method}: contributions to the rating, from {expl.bias:+.2f}{gap})"
    if expl.labels is not None:  # a multi-label run: its labels, and the most probable one's log-odds explained
        chosen = ", ".join(expl.labels) or "none over its threshold"
        return (f"labels: {chosen}  ({expl.method}: contributions to the log-odds of {expl.label}, "
                f"probability {expl.probability:.2f}{gap})")  # fmt: skip
    target = f"{expl.label} against the other class" if len(expl.scores) == 2 else f"{expl.label} against the rest"
    return f"{expl.label} {expl.probability:.2f}  ({expl.method}: contributions to {target}{gap})"


def coloured_text(expl: Explanation, *, colour: bool) -> str:
    """The original text with each token styled by its contribution (plain text without `colour`)."""
    import typer

    if not colour:
        return expl.text
    top = _strength(expl)
    out, at = [], 0
    for t in expl.tokens:
        if t["start"] < at:  # overlapping pieces (rare subword offsets): keep the text once
            continue
        out.append(expl.text[at : t["start"]])
        piece = expl.text[t["start"] : t["end"]]
        share = abs(t["contribution"]) / top
        style = next((s for floor, s in _LEVELS if share >= floor), None)
        if style is None:
            out.append(piece)
        else:
            dim, bright = _COLOURS[t["contribution"] > 0]
            out.append(typer.style(piece, fg=bright if style else dim, **style))
        at = t["end"]
    out.append(expl.text[at:])
    return "".join(out)


def terminal(expl: Explanation, *, colour: bool, top: int = 8) -> str:
    lines = [headline(expl), coloured_text(expl, colour=colour)]
    towards, against = strongest(expl.tokens, top)
    lines.append("for:     " + (", ".join(f"{t['token']} {t['contribution']:+.2f}" for t in towards) or "-"))
    lines.append("against: " + (", ".join(f"{t['token']} {t['contribution']:+.2f}" for t in against) or "-"))
    if expl.cut:
        lines.append("note: the text is longer than the model reads; only the tokens it read are coloured")
    return "\n".join(lines)


def token_html(expl: Explanation) -> str:
    """The text as HTML, every token a <span> whose background shows its contribution."""
    top = _strength(expl)
    out, at = [], 0
    for t in expl.tokens:
        if t["start"] < at:
            continue
        out.append(html.escape(expl.text[at : t["start"]]))
        alpha = min(abs(t["contribution"]) / top, 1.0) * 0.85
        rgb = "22,163,74" if t["contribution"] > 0 else "220,38,38"
        out.append(
            f'<span class="tok" data-contribution="{t["contribution"]:.6g}" '
            f'title="{html.escape(t["token"])}: {t["contribution"]:+.3f}" '
            f'style="background: rgba({rgb},{alpha:.3f})">{html.escape(expl.text[t["start"] : t["end"]])}</span>'
        )
        at = t["end"]
    out.append(html.escape(expl.text[at:]))
    return "".join(out).replace("\n", "<br>")


def page(expl: Explanation, run_name: str = "") -> str:
    """A page of its own for `explain --html`."""
    towards, against = strongest(expl.tokens, 10)

    def items(tokens):
        return "".join(f"<li>{html.escape(t['token'])} <code>{t['contribution']:+.3f}</code></li>" for t in tokens)

    answer = f"rating {expl.rating:.2f}" if expl.rating is not None else f"{expl.label} {expl.probability:.2f}"
    push = (
        "raised the rating, red lowered it"
        if expl.rating is not None
        else (f"pushed towards {html.escape(expl.label)}, red away from it")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sentiment explain: {html.escape(answer)}</title>
<style>
body {{ font: 16px/1.6 system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; padding: 0 1rem; color: #111; }}
.label {{ font-size: 1.5rem; font-weight: 600; }}
.text {{ border: 1px solid #ddd; border-radius: 6px; padding: 1rem; }}
.tok {{ border-radius: 3px; padding: 0 1px; }}
.lists {{ display: flex; gap: 3rem; }} small {{ color: #555; }}
</style></head><body>
<p class="label" id="label">{html.escape(answer)}</p>
<p><small>{html.escape(headline(expl))}{" · run " + html.escape(run_name) if run_name else ""}.
Green {push}; hover a word for its contribution.</small></p>
<div class="text" id="text">{token_html(expl)}</div>
<div class="lists"><div><h3>for</h3><ol>{items(towards)}</ol></div>
<div><h3>against</h3><ol>{items(against)}</ol></div></div>
</body></html>
"""
