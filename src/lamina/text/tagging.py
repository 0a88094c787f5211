"""Entity spans of BIO and BIOES tag sequences: which tag may follow which, the spans a sequence
encodes, and entity-level precision, recall and F1 (the CoNLL evaluation, as seqeval computes it).

Tags are strings: ``"O"`` outside any entity, or a prefix and an entity type joined by a dash,
``"B-PER"``. In BIO (IOB2) an entity is a ``B-`` tag followed by ``I-`` tags of its type; BIOES
adds ``E-`` for an entity's last token and ``S-`` for a single-token entity.

Spans are ``(type, start, end)`` with ``end`` exclusive: ``tags[start:end]`` is the entity.

Two readings of a sequence, as seqeval's two modes:

* lenient (the default; conlleval's rules): a span starts at ``B-`` or ``S-``, at ``I-``/``E-``
  after ``O``, ``E-`` or ``S-``, or where the type changes, and ends before the next start, an
  ``O``, or after ``E-``/``S-``. Any tag sequence, BIO or BIOES, is read this way.
* ``strict=True``: only well-formed entities of ``scheme`` count (BIO: ``B-x I-x*``; BIOES:
  ``S-x`` or ``B-x I-x* E-x``); a stray ``I-`` or an unfinished ``B-`` gives no span.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy

__all__ = ["bio_allowed_transitions", "bio_spans", "entity_scores"]

_SCHEMES = {"BIO": "BI", "BIOES": "BIES"}


def _split(tag: str, scheme: str | None = None, who: str = "bio_spans") -> tuple[str, str]:
    """(prefix, type) of a tag: ('O', '') for 'O'."""
    if not isinstance(tag, str):
        raise TypeError(f"{who}: tags must be strings such as 'B-PER' or 'O', got {tag!r}")
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    allowed = _SCHEMES[scheme] if scheme else "BIES"
    if not dash or prefix not in allowed or not kind:
        expected = ", ".join(f"'{p}-TYPE'" for p in allowed)
        raise ValueError(f"{who}: tag {tag!r} is not 'O' or one of {expected}")
    return prefix, kind


def _check_scheme(scheme: str, who: str) -> str:
    if scheme not in _SCHEMES:
        raise ValueError(f"{who}: scheme must be one of {tuple(_SCHEMES)}, got {scheme!r}")
    return scheme


def _may_follow(before: tuple[str, str], after: tuple[str, str], scheme: str) -> bool:
    """Whether tag ``after`` may come right after tag ``before`` (('START', '') and
    ('END', '') stand for the sequence's ends)."""
    (p, t), (q, u) = before, after
    if scheme == "BIO":
        if q == "I":
            return p in ("B", "I") and t == u
        return p != "END" and q != "START"
    opens = p in ("START", "O", "E", "S")          # no entity is open before ``after``
    if q in ("I", "E"):
        return p in ("B", "I") and t == u
    if q in ("O", "B", "S", "END"):
        return opens
    return False


def bio_allowed_transitions(labels: Sequence[str], scheme: str = "BIO") -> numpy.ndarray:
    """A boolean (K + 2, K + 2) matrix M for the K ``labels`` (tag strings in the order of the
    tag ids): M[i, j] is True when tag j may follow tag i; row K is the start of a sequence and
    column K + 1 its end (the layout :class:`lamina.nn.CRF`'s ``allowed_transitions`` takes,
    as AllenNLP's ``allowed_transitions``). BIO forbids ``I-x`` after anything but ``B-x`` or
    ``I-x`` (so at the start too); BIOES also requires an open entity to go on with ``I-x`` or
    close with ``E-x``, and forbids ending a sequence inside one."""
    who = "bio_allowed_transitions"
    scheme = _check_scheme(scheme, who)
    parts = [_split(label, scheme, who) for label in labels]
    k = len(parts)
    ends = parts + [("START", ""), ("END", "")]
    allowed = numpy.zeros((k + 2, k + 2), dtype=bool)
    for i, before in enumerate(ends):
        if before[0] == "END":
            continue
        for j, after in enumerate(ends):
            if after[0] != "START":
                allowed[i, j] = _may_follow(before, after, scheme)
    allowed[k, k + 1] = False                    # a sequence has at least one tag
    return allowed


def _lenient_spans(parts: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    spans, begin = [], None
    prev, prev_kind = "O", ""
    for i, (tag, kind) in enumerate(parts + [("O", "")]):
        ends = (prev in ("E", "S") or (prev in ("B", "I") and tag in ("B", "S", "O"))
                or (prev != "O" and prev_kind != kind))
        if ends and begin is not None:
            spans.append((prev_kind, begin, i))
            begin = None
        starts = (tag in ("B", "S") or (prev in ("E", "S", "O") and tag in ("I", "E"))
                  or (tag != "O" and prev_kind != kind))
        if starts:
            begin = i
        prev, prev_kind = tag, kind
    return spans


def _strict_spans(parts: list[tuple[str, str]], scheme: str) -> list[tuple[str, int, int]]:
    spans, begin, open_kind = [], None, None
    for i, (tag, kind) in enumerate(parts):
        if tag in ("I", "E") and begin is not None and kind == open_kind:
            if tag == "E":
                spans.append((kind, begin, i + 1))
                begin = None
            continue
        if begin is not None and scheme == "BIO":
            spans.append((open_kind, begin, i))     # a BIO entity ends at any other tag
        begin = None
        if tag == "B":
            begin, open_kind = i, kind
        elif tag == "S":
            spans.append((kind, i, i + 1))
    if begin is not None and scheme == "BIO":
        spans.append((open_kind, begin, len(parts)))
    return spans


def bio_spans(tags: Sequence[str], scheme: str = "BIO", strict: bool = False) -> list[tuple[str, int, int]]:
    """The entity spans ``(type, start, end)`` (end exclusive) of one tag sequence, in order
    (see the module notes for the lenient and strict readings). The lenient reading accepts
    BIOES prefixes whatever ``scheme`` says; the strict one only those of ``scheme``."""
    scheme = _check_scheme(scheme, "bio_spans")
    parts = [_split(tag, scheme if strict else None) for tag in tags]
    return _strict_spans(parts, scheme) if strict else _lenient_spans(parts)


def _as_tag_strings(sequence, labels: Sequence[str] | None, who: str) -> list[str]:
    if labels is None:
        return list(sequence)
    out = []
    for tag in sequence:
        index = int(tag)
        if not 0 <= index < len(labels):
            raise ValueError(f"{who}: tag id {index} is out of range for the {len(labels)} labels")
        out.append(labels[index])
    return out


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def entity_scores(true_tags: Iterable[Sequence], predicted_tags: Iterable[Sequence], scheme: str = "BIO",
                  strict: bool = False, labels: Sequence[str] | None = None) -> dict:
    """Entity-level precision, recall and F1 over a corpus (seqeval's micro averages): an entity
    counts as found when a predicted span has its exact type, start and end.

    ``true_tags`` and ``predicted_tags``: sequences of tag strings, one per sentence (or of tag
    ids, with ``labels`` naming them, e.g. :meth:`lamina.nn.CRF.decode`'s output). Returns
    ``{"precision", "recall", "f1", "true", "predicted", "correct", "per_type"}`` with
    ``per_type`` the same figures for each entity type. A ratio with a zero denominator is 0."""
    who = "entity_scores"
    true_tags, predicted_tags = list(true_tags), list(predicted_tags)
    if len(true_tags) != len(predicted_tags):
        raise ValueError(f"{who}: {len(true_tags)} true sequences but {len(predicted_tags)} predicted ones")
    truth, found = set(), set()
    for n, (gold, guess) in enumerate(zip(true_tags, predicted_tags)):
        gold, guess = _as_tag_strings(gold, labels, who), _as_tag_strings(guess, labels, who)
        if len(gold) != len(guess):
            raise ValueError(f"{who}: sequence {n} has {len(gold)} true tags but {len(guess)} predicted ones")
        truth.update((n, *span) for span in bio_spans(gold, scheme, strict))
        found.update((n, *span) for span in bio_spans(guess, scheme, strict))

    def figures(gold: set, guess: set) -> dict:
        correct = len(gold & guess)
        precision, recall = _ratio(correct, len(guess)), _ratio(correct, len(gold))
        f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "true": len(gold), "predicted": len(guess),
                "correct": correct}

    result = figures(truth, found)
    kinds = sorted({span[1] for span in truth | found})
    result["per_type"] = {kind: figures({s for s in truth if s[1] == kind}, {s for s in found if s[1] == kind})
                          for kind in kinds}
    return result
