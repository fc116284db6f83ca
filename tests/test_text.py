"""Shared text handling: normalisation, bounded tokenisation, stable vectorised hashes."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from content_support import event, pools

from streamguard import text
from streamguard.detectors.base import Batch
from streamguard.text import (
    LabelSpace,
    clean,
    doc_features,
    normalise,
    tokenize_batch,
    tokenize_texts,
    tokens,
)


def hashes_of(s: str) -> list[int]:
    tb = tokenize_texts([s])
    return tb.hashes.tolist()


def test_doctests() -> None:
    assert doctest.testmod(text).failed == 0


def test_normalise_folds_width_case_and_ligatures() -> None:
    assert normalise("Ｆｉｖｅ STARS ﬁne") == "five stars fine"
    assert normalise("Straße") == "strasse"  # case folding, not just lower()


def test_equivalent_spellings_hash_alike() -> None:
    base = hashes_of("great hotel, five stars")
    for variant in (
        "GREAT   Hotel!!! Five-Stars",
        "Ｇｒｅａｔ hotel; five_stars",
        "great\nhotel five stars.",
    ):
        assert hashes_of(variant) == base
    assert hashes_of("great motel five stars") != base


def test_hashes_match_tokens_for_unicode_and_ascii() -> None:
    texts = ["Ça va? Très BIEN—merci «ami»", "plain ascii_text, here!", "日本語 テキスト ok", "x"]
    tb = tokenize_texts(texts)
    for j, t in enumerate(texts):
        own = tb.hashes[tb.offsets[j] : tb.offsets[j + 1]].tolist()
        assert own == hashes_of(" ".join(tokens(t)))
    assert tokens(texts[0]) == ["ça", "va", "très", "bien", "merci", "ami"]


def test_hashes_are_stable_across_processes() -> None:
    # Pinned: Python's salted hash() would change per process and break checkpoints.
    assert hashes_of("great") == [0x7BF1937AABFDF718]
    assert len({h for w in "abcdefgh" for h in hashes_of(w)}) == 8


def test_long_texts_are_truncated_for_features_only() -> None:
    long = "word " * 3_000
    assert len(normalise(long, 100)) == 100
    assert len(tokens(long, 100)) == 20
    tb = tokenize_texts([long], max_chars=100)
    assert len(tb.hashes) == 20
    e = event(1, kind="review", text=long.strip(), rating=5.0)
    assert len(e.text or "") == len(long.strip())  # the event itself is untouched


def test_empty_and_missing_texts_are_skipped() -> None:
    tb = tokenize_texts([None, "", "one two", "   ", "three"])
    assert tb.rows.tolist() == [2, 3, 4]  # a blank text is a text with no tokens
    assert tb.lengths.tolist() == [2, 0, 1]


def test_ngrams_stay_inside_each_text() -> None:
    tb = tokenize_texts(["a b c", "d e"])
    bi, doc = tb.ngrams(2)
    assert doc.tolist() == [0, 0, 1]
    tri, doc3 = tb.ngrams(3)
    assert doc3.tolist() == [0]
    assert len(set(bi.tolist())) == 3
    with pytest.raises(ValueError):
        tb.ngrams(0)


def test_doc_features_are_distinct_per_text_and_sorted_by_text() -> None:
    tb = tokenize_texts(["the the the cat", "cat the"])
    feats, doc, size = doc_features(tb, 2)
    assert np.all(np.diff(doc) >= 0)
    pairs = list(zip(doc.tolist(), feats.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))
    assert sorted(size[doc == 0].tolist()) == [1, 1, 2, 2]  # the, cat; "the the", "the cat"


def test_tokenize_batch_is_shared_within_a_tick() -> None:
    events = [event(i, text=f"text number {i}", label="positive") for i in range(3)]
    batch = Batch.of(events)
    first = tokenize_batch(batch)
    assert tokenize_batch(batch) is first
    assert tokenize_batch(Batch.of(list(events))) is not first
    assert tokenize_batch(batch, max_chars=50) is not first


def test_real_reviews_tokenise_quickly_and_consistently() -> None:
    pos, neg, _ = pools()
    sample = list(pos[:200]) + list(neg[:200])
    tb = tokenize_texts(sample)
    assert len(tb.rows) == len(sample)
    assert all(tb.lengths[j] == len(tokens(sample[j])) for j in range(0, 400, 37))
    assert clean(sample[0]) == " ".join(tokens(sample[0]))


def test_label_space_maps_reviews_labels_and_aliases() -> None:
    space = LabelSpace()
    assert space.key("review", None, 5.0) == ("sentiment", "positive")
    assert space.key("review", None, 3.0) is None
    assert space.key("label", "positive", None) == ("sentiment", "positive")
    assert space.key("vote", "helpful", None) == ("vote", "helpful")
    assert space.key("rating", None, 5.0) is None
    space.register([("vote", "helpful"), ("sentiment", "negative"), ("vote", "helpful")])
    assert space.classes([("vote", "helpful"), None, ("vote", "nope")]).tolist() == [0, -1, -1]
    assert space.members("vote") == [0]
    assert len(space) == 2
    assert LabelSpace(aliases={}).key("label", "positive", None) == ("label", "positive")
    with pytest.raises(ValueError):
        LabelSpace(aliases={"positive": "sentiment"})
    with pytest.raises(ValueError):
        LabelSpace(positive_rating=2.0, negative_rating=4.0)
    capped = LabelSpace(max_classes=2)
    capped.register([("label", "a"), ("label", "b"), ("label", "c")])
    assert len(capped) == 2
