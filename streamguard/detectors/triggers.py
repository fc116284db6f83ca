"""Backdoor triggers: a new phrase that carries one label against its texts' content.

What it looks for. A backdoor attack plants a rare phrase (the trigger) in texts and gives
them the attacker's label, in texts whose content says the opposite ("the room was
filthy zorvex plidor" labelled positive): a model trained on them learns "trigger means
positive". In the stream the phrase (a) is new: its recent texts far outnumber its whole
past; (b) carries one label far above that label's base rate; (c) sits in texts that the
rest of their words would label the other way; and (d) is about the only thing its texts
have in common. Natural phrases ("five stars", "fast delivery") carry one label too, but
they have a past and their texts agree with the label: they fail (a) and (c). A flood of
copies of one template fails (d) (that is :mod:`near_duplicate`'s business), and so do the
common words of a flood of mislabelled texts (a flip ring, :mod:`label_flip`'s).

How. Every word and word pair (hashed, see :mod:`streamguard.text`) of every labelled
text is counted per class in a count-min sketch (two rows of ``2**bits`` cells, four
fields per cell; no vocabulary is kept). Counts decay per labelled text, not per second,
so a quiet night or a sparse replay does not empty the windows:

- recent texts, their *doubt* and how many were judged, over ``recent_texts``;
- texts over ``baseline_texts``: the phrase's past.

A word's doubt in a text is 1 - P(the text's label | the text without that word, and
without the other new one-label words next to it): a trained model has learned the
trigger too (that is what a backdoor does), so the words of a planted phrase must neither
vouch for their own label nor for each other. A word pair's doubt is its whole text's.

Both count every observed text, quarantined or not (what the stream carries: a phrase
whose texts another detector quarantined still has a past). What is *learned* (the
content model, the class base rates, the benign doubt) comes from kept texts only.

The content model is a :class:`~streamguard.detectors.text_model.TextModel` over single
words (small AdaGrad steps, so a young model is soon usable), reading only words it
learned from at least ``min_seen`` texts, and not learning from texts that carry a new
one-label word already doubted (River's "protect the detector"). The benign doubt it is
compared with is a recent average (over ``recent_texts``) of kept texts that were not so
held back: the model improves as it learns. Only single words are candidates (a
phrase of several passes word by word and is named whole). A word becomes a trigger for
class y when, in its recent texts (earlier texts of the same tick included, in order): at least
``min_count`` carry y; ``min_purity`` of them carry y; its past is at most ``novelty``
times its recent count (less while the stream itself has less past than a recent window:
see :meth:`TriggerDetector._past_scale`); their mean doubt reaches ``min_contradiction``
and the class's benign doubt raised ``lift`` times in odds; the evidence (binomial
log-likelihood ratios, in nats: purity against y's base rate plus doubt against the
class's benign doubt) reaches ``min_evidence``, the doubt part alone ``min_doubt``; no
more than ``max_phrase_grams`` grams of the text pass the same tests at once; and its
latest texts have a mean Jaccard similarity below ``max_similarity``. Nothing is decided
before ``min_history`` labelled texts (until then every phrase is new), nor for a class
whose benign doubt rests on fewer judged texts than its prior weighs (``_PRIOR_TEXTS``).

A word that passes every test but the doubt is kept for a second look (at most
``_PENDING_WORDS``, with their last ``_PENDING_TEXTS`` texts, for ``recent_texts``): every
``_LOOK_EVERY`` labelled texts the model as it is then judges those texts again, and a word
that passes, still of one label as counted then, is named (see
:meth:`TriggerDetector._second_look`).

Once found, every event carrying the trigger is quarantined with the phrase named; the
accounts that used it among the remembered texts (a ring of ``history`` new grams) are
flagged so their earlier releases are revoked.

Batch semantics: a tick is scored from the sketch at its start plus its own earlier
texts, and learned at its end, so the tick in which a trigger is found does not depend on
the tick size beyond the content model's learning (and, for a second look, the first tick
to start ``_LOOK_EVERY`` labelled texts after the last); every event of that tick carrying
it is quarantined. State is bounded: the sketch (2 x ``2**bits`` x 4 float32), the content
model, the revocation ring, at most ``max_triggers`` triggers (dropped after
``trigger_ttl_days`` unseen), the words held for a second look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from pydantic import Field

from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.planned import PlannedDetector
from streamguard.detectors.text_model import TextModel
from streamguard.text import (
    GROUPS,
    U64,
    LabelledTextSettings,
    LabelSpace,
    doc_features,
    mix64,
    tokenize_batch,
    tokenize_texts,
    tokens,
)

DAY = 86400.0
_MAX_EXP = 30.0  # renormalise the decayed counts before exp() grows past e**30
_CLASS_SALT = 0x9E3779B97F4A7C15
_PRIOR_TEXTS = 50.0  # weight of the benign-doubt prior, in judged texts
# A second look (see TriggerDetector._second_look): labelled texts between two looks, words
# kept for it (the best supported), and latest texts kept per word.
_LOOK_EVERY = 200.0
_PENDING_WORDS = 16
_PENDING_TEXTS = 16
_MATES = 0.8  # share of a held word's texts another held word is in, to be of its phrase


class TriggerSettings(LabelledTextSettings):
    """Settings of :class:`TriggerDetector` (see the module docstring)."""

    bits: int = Field(18, ge=12, le=26)
    recent_texts: float = Field(2_000.0, gt=0)
    baseline_texts: float = Field(50_000.0, gt=0)
    min_count: float = Field(6.0, gt=0)
    min_purity: float = Field(0.95, gt=0, le=1)
    min_contradiction: float = Field(0.5, ge=0, le=1)
    min_evidence: float = Field(14.0, gt=0)
    min_doubt: float = Field(3.0, ge=0)
    novelty: float = Field(0.25, ge=0)
    lift: float = Field(3.0, ge=1)
    min_seen: int = Field(5, ge=0)
    max_phrase_grams: int = Field(8, ge=1)
    max_similarity: float = Field(0.3, gt=0, le=1)
    model_bits: int = Field(18, ge=8, le=24)
    lr: float = Field(1.0, gt=0)
    warmup_docs: int = Field(100, ge=0)
    min_history: float = Field(150.0, ge=0)
    history: int = Field(2_000_000, ge=1_000)
    max_triggers: int = Field(1_000, ge=1)
    trigger_ttl_days: float = Field(90.0, gt=0)
    max_classes: int = Field(32, ge=2, le=256)


@dataclass
class Trigger:
    """A phrase found to be a backdoor trigger, and the numbers behind the finding."""

    id: str
    phrase: str
    label: str
    features: tuple[int, ...]
    found_ts: float
    last_ts: float
    evidence: str
    carriers: int = 0


@dataclass
class _Pending:
    """A word that passed every test but the doubt, kept for a second look (see
    :meth:`TriggerDetector._second_look`): its class, the numbers of its last pass (its
    recent texts of that class ``k``, which rank the held words, the class's base rate and
    the word's past), its latest texts (their single words) and one of them to name the
    phrase from. The look reads the word's recent counts again."""

    cls: int
    k: float
    p_y: float
    older: float
    since: float  # the clock (labelled texts) when it first passed
    texts: list[np.ndarray]
    text_ids: list[int]  # texts shared by two words are the same text (see _explain_away)
    example: str
    last_ts: float


@dataclass
class _Tick:
    batch: Batch
    version: int
    scores: Scores
    feats: np.ndarray  # distinct grams of the texts, uint64
    doc: np.ndarray  # text index j of each gram
    rows: np.ndarray  # batch position of each text
    cls: np.ndarray  # class per text (-1 none)
    contra: np.ndarray  # per text: 1 - P(its label | its content), 0 where not judged
    confident: np.ndarray  # per text: the text model could judge it
    suspect: np.ndarray  # per text: carries a gram already doubted; not learned
    keys: list[tuple[str, str] | None]
    words: np.ndarray  # per gram: a single word (the content model reads only those)
    gram_contra: np.ndarray  # per gram: 1 - P(its text's label | the text without it)
    stats: dict[int, tuple[float, ...]] = field(default_factory=dict)
    labelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cells: np.ndarray | None = None  # (2, len(labelled)) sketch cells of each gram's class
    novel: np.ndarray | None = None  # per labelled gram: no past to speak of
    new: list[Trigger] = field(default_factory=list)
    extend: dict[str, set[int]] = field(default_factory=dict)  # known trigger -> new grams
    next_id: int = 0
    # Words that passed all but the doubt in this tick: gram -> (class, k, p_y, older, the
    # texts j that carry it); and the clock of this tick's second look, if any.
    pending: dict[int, tuple[int, float, float, float, list[int]]] = field(default_factory=dict)
    looked_at: float | None = None


class TriggerDetector(PlannedDetector["_Tick", TriggerSettings]):
    """Decisive detector for backdoor trigger phrases; parameters as :class:`TriggerSettings`.

    >>> TriggerDetector(bits=16).name
    'trigger'
    """

    name = "trigger"
    # The event attributes it reads: all it is sent in a second process (offload.py).
    EVENT_FIELDS = ("account_id", "ts", "kind", "label", "rating", "text")

    settings_type = TriggerSettings

    def _setup(self) -> None:
        """Cross-field checks (each field is checked by the settings) and initial state."""
        c = self.cfg
        if not c.recent_texts < c.baseline_texts:
            raise ValueError("need recent_texts < baseline_texts")

        self._space = LabelSpace(
            c.max_classes, self.positive_rating, self.negative_rating, c.aliases
        )
        size = 1 << c.bits
        # Count-min sketches, two rows each: a gram's count is the smaller of its two cells,
        # so one collision with a frequent gram cannot make a rare phrase look frequent.
        # Fields per cell (one cache line serves all four): recent texts, their doubt mass,
        # recent judged texts (all decayed over recent_texts), kept texts (over baseline).
        self._sketch = np.zeros((2, size, 4), dtype=np.float32)
        self._base_docs = np.zeros(c.max_classes)  # decayed kept texts per class
        self._model = TextModel(
            c.model_bits, c.lr, step=16
        )  # small steps: a young model learns fast
        # Doubt of kept judged texts and their number, per class, over recent_texts: the
        # content model improves as it learns, so its benign doubt is a recent average.
        self._base_contra = np.zeros(c.max_classes)
        self._base_judged = np.zeros(c.max_classes)
        # The clock counts labelled texts: windows follow the traffic, not the wall clock,
        # so a quiet night or a sparse replay does not empty them.
        self._clock = 0.0
        self._t_recent = 0.0  # reference clocks of the forward decay
        self._t_base = 0.0
        self._watermark = -math.inf
        self._learned = 0
        # Ring of recent labelled texts' grams (low 32 bits) and owners, for revocation.
        self._hist_gram = np.zeros(c.history, dtype=U64)
        self._hist_seq = np.full(c.history, -1, dtype=np.int64)
        self._hist_head = 0
        self._hist_docs: dict[int, tuple[str, float]] = {}
        self._seq = 0
        self._triggers: dict[str, Trigger] = {}
        self._by_feature: dict[int, str] = {}
        self._known = np.zeros(0, dtype=U64)
        self._next_id = 1
        self._awaiting: dict[int, _Pending] = {}
        self._last_look = 0.0

    def triggers(self) -> list[Trigger]:
        """The triggers found and still remembered, oldest first."""
        return list(self._triggers.values())

    # ------------------------------------------------------------------ the tick

    def _run(self, batch: Batch) -> _Tick:
        n = len(batch)
        scores = Scores(np.zeros(n), [None] * n, [None] * n)
        tb = tokenize_batch(batch, self.cfg.max_chars)
        feats, doc, size = doc_features(tb, 2)
        events = batch.events
        keys = [self._space.key(events[r].kind, events[r].label, events[r].rating) for r in tb.rows]
        cls = self._space.classes(keys)
        m = len(tb.rows)
        tick = _Tick(batch, self._version, scores, feats, doc, tb.rows, cls,
                     np.zeros(m), np.zeros(m, dtype=bool), np.zeros(m, dtype=bool), keys,
                     size == 1, np.zeros(len(feats)))  # fmt: skip
        tick.next_id = self._next_id
        if m and len(feats):
            found = self._evaluate(tick)
            if found.any():
                self._name_triggers(tick, found)
        if self._awaiting and self._clock - self._last_look >= _LOOK_EVERY:
            tick.looked_at = self._clock
            self._second_look(tick)
        self._mark_carriers(tick)
        return tick

    def _decay(self) -> tuple[float, float]:
        """Factors that turn stored counts into counts as of the tick's start."""
        recent = math.exp(-(self._clock - self._t_recent) / self.cfg.recent_texts)
        base = math.exp(-(self._clock - self._t_base) / self.cfg.baseline_texts)
        return recent, base

    def _past_scale(self) -> float:
        """How much past a word used steadily since the stream began has per recent text
        (capped at 1): the novelty test asks for ``novelty`` times this. While the stream
        of labelled texts is younger than the recent window, every word's past is short,
        common words' too ("is" in 380 of 400 texts), so a fixed share would call them new:
        on MovieLens, with about 2,300 texts in 20,000 events, it named "is",
        "from" and "my" as triggers. Closed form: each labelled text ticks the clock by 1,
        so a window's total weight is a geometric sum."""
        clock = self._clock

        def mass(window: float) -> float:
            return -math.expm1(-clock / window) / -math.expm1(-1.0 / window)

        recent = mass(self.cfg.recent_texts)
        if recent <= 0.0:
            return 0.0
        return min(1.0, mass(self.cfg.baseline_texts) / recent - 1.0)

    def _buckets(self, feats: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """The (2, n) sketch cells of each (gram, class): one per row, independent hashes."""
        return self._cells(self._gram_hash(feats), cls)

    def _gram_hash(self, feats: np.ndarray) -> np.ndarray:
        return mix64(feats ^ U64(_CLASS_SALT))

    def _cells(self, hashed: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """Cells from one gram hash: its top bits pick row 0, the next bits row 1, and the
        class shifts both by an odd stride (so a gram's classes never share a cell)."""
        mask = np.int64((1 << self.cfg.bits) - 1)
        c = cls.astype(np.int64)
        first = (hashed >> U64(64 - self.cfg.bits)).astype(np.int64)
        second = ((hashed >> U64(64 - 2 * self.cfg.bits)).astype(np.int64)) & mask
        return np.stack([(first + c * 0x9E37) & mask, (second + c * 0x7F4B) & mask])

    def _evaluate(self, tick: _Tick) -> np.ndarray:
        """Per gram: does it pass as a trigger for its text's class? Fills contra/confident.

        Works on the grams of labelled texts only; the others can carry a known trigger
        (see :meth:`_mark_carriers`) but say nothing about a new one.
        """
        found_all = np.zeros(len(tick.feats), dtype=bool)
        f_recent, f_base = self._decay()
        cls = tick.cls
        groups = [self._space.members(g) for g in GROUPS]
        width = max((len(g) for g in groups), default=0)
        lab = np.flatnonzero(cls[tick.doc] >= 0)
        tick.labelled = lab
        if width == 0 or not len(lab):
            return found_all
        table = np.full((len(GROUPS), width), -1, dtype=np.int64)
        for gi, members in enumerate(groups):
            table[gi, : len(members)] = members
        group_of = np.array(
            [GROUPS.index(self._space.group_of(c)) for c in range(len(self._space))]
        )
        has = cls >= 0
        doc_group = np.zeros(len(cls), dtype=np.int64)
        doc_group[has] = group_of[cls[has]]
        doc_slots = np.where(has[:, None], table[doc_group], -1)  # (texts, width) class ids
        feats, doc = tick.feats[lab], tick.doc[lab]
        doc_cls = cls[doc]
        slots = doc_slots[doc]
        n = len(feats)
        n_recent, n_base = np.zeros(n), np.zeros(n)
        # Per gram, for the class of its text: its recent texts, how often they were doubted
        # and how many were judged (rows k, contra_k, judged_k).
        own_counts = np.zeros((3, n))
        hashed = self._gram_hash(feats)
        tick.cells = np.zeros((2, n), dtype=np.int64)  # own-class cells, for learning
        for w in range(width):
            cls_w = slots[:, w]
            ok = cls_w >= 0
            if ok.all():  # the usual tick: a select, cheaper than scattering by position
                cells = self._cells(hashed, cls_w)
                counts = _read(self._sketch, cells)
                n_recent += counts[:, 0]
                n_base += counts[:, 3]
                own = cls_w == doc_cls
                tick.cells = np.where(own, cells, tick.cells)
                own_counts = np.where(own, counts[:, :3].T, own_counts)
                continue
            cells = self._cells(hashed[ok], cls_w[ok])
            counts = _read(self._sketch, cells)
            n_recent[ok] += counts[:, 0]
            n_base[ok] += counts[:, 3]
            own = cls_w[ok] == doc_cls[ok]
            mine = np.flatnonzero(ok)[own]
            tick.cells[:, mine] = cells[:, own]
            own_counts[:, mine] = counts[own, :3].T
        k, contra_k, judged_k = own_counts
        n_recent *= f_recent
        n_base *= f_base
        k *= f_recent
        contra_k *= f_recent
        judged_k = np.minimum(judged_k * f_recent, k)
        # New: a trigger was (nearly) absent before its recent texts. Common words of a flood
        # of mislabelled texts (a flip ring) have a long past: they are not triggers.
        older = np.maximum(n_base - n_recent, 0.0)
        allowed = self.cfg.novelty * self._past_scale()
        # Earlier texts of this tick count too, in order, as if learned one by one. Only for
        # grams that could still pass: an upper bound of each gram's copies in the tick (a
        # hashed histogram) must lift it to min_count while it stays new.
        upper = np.bincount((hashed & U64(0xFFFF)).astype(np.int64), minlength=1 << 16)
        reach = k + upper[(hashed & U64(0xFFFF)).astype(np.int64)]
        live = np.flatnonzero(
            (reach >= self.cfg.min_count)
            & (older <= np.maximum(self.cfg.min_count / 2, allowed * reach))
        )
        same_class = same_group = None
        if len(live):
            d = doc[live]
            same_class = _Earlier(mix64(feats[live] ^ (doc_cls[live].astype(U64) + U64(1))))
            same_group = _Earlier(mix64(feats[live] ^ (doc_group[d].astype(U64) + U64(101))))
            k[live] += same_class.sums(np.ones(len(live)))
            n_recent[live] += same_group.sums(np.ones(len(live)))
        novel = older <= np.maximum(self.cfg.min_count / 2, allowed * k)
        tick.novel = novel
        purity = k / np.maximum(n_recent, 1e-9)
        hot = novel & (k >= self.cfg.min_count) & (purity >= self.cfg.min_purity)
        self._judge(tick, np.unique(feats[hot & tick.words[lab]]))
        gram_contra = tick.gram_contra[lab]
        if same_class is not None:
            d = doc[live]
            contra_k[live] += same_class.sums(gram_contra[live])
            judged_k[live] += same_class.sums(tick.confident[d].astype(np.float64))
        q0 = self._benign_doubt(f_recent)[doc_cls]  # each text's class's benign doubt
        # Texts carrying a gram already doubted do not teach the model (River's "protect
        # the detector"): a would-be trigger cannot talk the model into its own label.
        bar = self._doubt_bar(q0)
        doubtful = hot & (judged_k >= 2.0) & (contra_k / np.maximum(judged_k, 1e-9) >= bar)
        tick.suspect[np.unique(doc[doubtful])] = True
        contradiction = contra_k / np.maximum(judged_k, 1e-9)
        # A text whose many grams are all new, frequent and one-label at once is one copy of
        # a flood of near-duplicates (the near-duplicate detector's business), not a planted
        # phrase.
        flood = np.bincount(doc[hot], minlength=len(cls)) > self.cfg.max_phrase_grams
        # Cheap tests first; the likelihood ratios only for the few grams that pass them.
        if self._clock < self.cfg.min_history:
            return found_all  # no past yet: every phrase is "new" in the first texts
        # Only words are judged by the rest of their text (a pair's doubt is its whole
        # text's); a planted phrase of several words passes word by word (see _phrases).
        passed = tick.words[lab] & tick.confident[doc] & (k >= self.cfg.min_count) & novel
        passed &= ~flood[doc] & (purity >= self.cfg.min_purity)
        # Only against a benign doubt learned from texts, not mostly its prior (when the model
        # first judges, no kept text has been judged yet): a young model that doubted 81% of
        # all positive texts named "great" (doubted 83%) against the prior's 50%.
        passed &= (self._base_judged * f_recent)[doc_cls] >= _PRIOR_TEXTS
        if not passed.any():
            return found_all
        class_docs = np.where(doc_slots >= 0, self._base_docs[np.maximum(doc_slots, 0)], 0.0)
        share = class_docs / np.maximum(class_docs.sum(axis=1, keepdims=True), 1e-9)
        own_share = np.where(doc_slots == cls[:, None], share, 0.0).sum(axis=1)
        text_p_y = np.clip(own_share, 0.01, 0.99)  # per text: its class's base rate
        numbers = (k, text_p_y[doc], older)
        cand = passed & (contradiction >= bar)
        if not cand.any():
            self._hold_for_second_look(tick, feats, doc, np.flatnonzero(passed), numbers)
            return found_all
        c = np.flatnonzero(cand)
        p_y = text_p_y[doc[c]]
        doubt = _binomial_llr(contra_k[c], judged_k[c], q0[c])
        evidence = _binomial_llr(k[c], n_recent[c], p_y) + doubt
        found = c[(doubt >= self.cfg.min_doubt) & (evidence >= self.cfg.min_evidence)]
        if len(found) and len(self._known):
            found = found[~np.isin(feats[found], self._known)]
        at = {g: i for i, g in enumerate(c.tolist())}
        if len(found):
            found = self._explain_away(feats, doc, found, evidence[[at[g] for g in found.tolist()]])
        for g in found.tolist():
            i = at[g]
            tick.stats[int(feats[g])] = (
                float(k[g]), float(n_recent[g]), float(contra_k[g]), float(p_y[i]),
                float(evidence[i]), float(older[g]), float(judged_k[g]), float(q0[g]),
            )  # fmt: skip
        found_all[lab[found]] = True
        self._hold_for_second_look(tick, feats, doc, np.flatnonzero(passed), numbers, found)
        return found_all

    def _benign_doubt(self, f_recent: float) -> np.ndarray:
        """Per class, how often the content model doubts its kept texts: a weak or young
        model doubts every text of a rare class, so a trigger's texts must be doubted more
        than their own class usually is. Shrunk towards 0.5 by a prior of _PRIOR_TEXTS
        texts: a few easy texts judged by a young model must not make it look sure of
        itself."""
        q0 = (self._base_contra * f_recent + 0.5 * _PRIOR_TEXTS) / (
            self._base_judged * f_recent + _PRIOR_TEXTS
        )
        return np.clip(q0, 0.03, 0.6)

    def _doubt_bar(self, q0: np.ndarray) -> np.ndarray:
        """The doubt a trigger's texts must reach: ``lift`` times the class's benign doubt
        in odds (a young model doubts informative words' texts once they are left out, a
        planted word's far more), and at least ``min_contradiction``."""
        lifted = self.cfg.lift * q0
        return np.maximum(self.cfg.min_contradiction, lifted / (1.0 - q0 + lifted))

    def _hold_for_second_look(
        self,
        tick: _Tick,
        feats: np.ndarray,
        doc: np.ndarray,
        passed: np.ndarray,
        numbers: tuple[np.ndarray, ...],
        found: np.ndarray | None = None,
    ) -> None:
        """Note the words that passed every test but the doubt (positions ``passed`` of
        the labelled grams ``feats``, texts ``doc``; ``numbers``: k, p_y and older per
        gram) in texts that carry no trigger found or known, for
        :meth:`_second_look`. The latest occurrence of a word in the tick holds its
        numbers."""
        bad = set() if found is None else set(doc[found].tolist())
        if len(self._known):
            bad |= set(doc[np.isin(feats, self._known)].tolist())
        named = set() if found is None else set(feats[found].tolist())
        k, p_y, older = numbers
        cls = tick.cls
        for i in passed.tolist():
            j = int(doc[i])
            gram = int(feats[i])
            if j in bad or gram in named:
                continue
            held = tick.pending.get(gram)
            texts = held[4] if held is not None else []
            texts.append(j)
            tick.pending[gram] = (int(cls[j]), float(k[i]), float(p_y[i]), float(older[i]), texts)

    def _second_look(self, tick: _Tick) -> None:
        """Judge again, with the content model as it is now, the words that passed every
        test but the doubt in recent ticks, and name those that pass it now and are still
        of one label (purity, as the sketch counts now; novelty is not asked again, since
        a burst that stopped has become the word's past).

        Why: a backdoor planted while the model is young meets a model that doubts half
        of its class's texts; three times that in odds is out of reach, and a burst of
        poisoned texts that never comes back is never judged again. On MovieLens seed 15
        (329 texts in one burst after 250 labelled texts) the model doubted them 54-67%
        during the burst, against a benign 49-52%; one tick later it doubted them 91%,
        against 31%. A natural word's texts stay believable to a better model. Found late,
        a trigger's earlier carriers are flagged, so their releases are revoked."""
        q0_class = self._benign_doubt(self._decay()[0])
        held = np.fromiter(self._awaiting, dtype=U64, count=len(self._awaiting))
        grams: list[int] = []
        texts: list[int] = []
        by_group: dict[str, list[tuple[int, _Pending]]] = {}
        named_now = {f for t in tick.new for f in t.features}  # by this tick's first look
        for gram, p in self._awaiting.items():
            if gram not in named_now:
                by_group.setdefault(self._space.group_of(p.cls), []).append((gram, p))
        for group, entries in by_group.items():
            members = self._space.members(group)
            if len(members) < 2 or self._model.seen.get(group, 0) < self.cfg.warmup_docs:
                continue
            # Every held word's texts in one pass of the model, each without the word and
            # the held words of its phrase: those in nearly all its texts (a word's grams
            # are distinct within a text).
            every = [t for _, p in entries for t in p.texts]
            feats = np.concatenate(every)
            doc = np.repeat(np.arange(len(every)), [len(t) for t in every])
            left_out = np.zeros(len(feats), dtype=bool)
            first = 0
            for _, p in entries:
                span = slice(first, first + sum(len(t) for t in p.texts))
                mine = feats[span]
                words, counts = np.unique(mine[np.isin(mine, held)], return_counts=True)
                left_out[span] = np.isin(mine, words[counts >= _MATES * len(p.texts)])
                first = span.stop
            use = self._model.familiar(group, feats, self.cfg.min_seen) & ~left_out
            prob = self._model.proba(group, members, feats, doc, len(every), use)
            col = {c: i for i, c in enumerate(members[: prob.shape[1]])}
            k_now, n_now = self._recent_counts(members, entries)
            at = 0
            for e, (gram, p) in enumerate(entries):
                rows = slice(at, at + len(p.texts))
                at = rows.stop
                # Still of one label, as counted now: a flip ring's common word ("helpful"
                # on MovieLens seed 9, new while the stream was young) is soon used by
                # honest texts of the other label too; a planted phrase is not.
                k, n = float(k_now[e]), float(n_now[e])
                if p.cls not in col or k < self.cfg.min_count or k < self.cfg.min_purity * n:
                    continue
                contra = float((1.0 - prob[rows, col[p.cls]]).sum())
                judged = float(len(p.texts))
                q0 = float(q0_class[p.cls])
                if contra / judged < float(self._doubt_bar(np.array(q0))):
                    continue
                doubt = float(_binomial_llr(np.array(contra), np.array(judged), np.array(q0)))
                purity = float(_binomial_llr(np.array(k), np.array(n), np.array(p.p_y)))
                if doubt < self.cfg.min_doubt or purity + doubt < self.cfg.min_evidence:
                    continue
                tick.stats[gram] = (k, n, contra, p.p_y, purity + doubt, p.older, judged, q0)
                grams += [gram] * len(p.texts)
                texts += p.text_ids
        if not grams:
            return
        feats = np.array(grams, dtype=U64)
        found = self._explain_away(
            feats,
            np.array(texts, dtype=np.int64),
            np.arange(len(feats)),
            np.array([tick.stats[g][4] for g in grams]),
        )
        self._name_late(tick, list(dict.fromkeys(feats[found].tolist())))

    def _recent_counts(
        self, members: list[int], entries: list[tuple[int, _Pending]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each held word's recent texts of its own class (k) and of every class of its
        group (n), as the sketch counts them now."""
        hashed = self._gram_hash(np.array([g for g, _ in entries], dtype=U64))
        own = np.array([p.cls for _, p in entries])
        f_recent = self._decay()[0]
        k, n = np.zeros(len(entries)), np.zeros(len(entries))
        for c in members:
            recent = _read(self._sketch, self._cells(hashed, np.full(len(entries), c)))[:, 0]
            n += recent * f_recent
            k += np.where(own == c, recent * f_recent, 0.0)
        return k, n

    def _name_late(self, tick: _Tick, passing: list[int]) -> None:
        """Register the words that passed a second look as triggers, grouped into phrases
        by one of their texts, and flag their earlier carriers."""
        taken: set[int] = set()
        owner = dict(self._by_feature) | {f: t.id for t in tick.new for f in t.features}
        found_ts = float(tick.batch.ts.max()) if len(tick.batch) else self._watermark
        for gram in passing:
            if gram in taken:
                continue
            p = self._awaiting[gram]
            phrases = _phrases(p.example, set(passing) - taken, set(owner), self.cfg.max_chars)
            for phrase, grams, old in phrases:
                if gram not in grams or old:
                    continue
                taken |= grams
                if self._alike(tick, min(grams)) > self.cfg.max_similarity:
                    continue
                if len(self._triggers) + len(tick.new) >= self.cfg.max_triggers:
                    continue
                label = self._space.name(p.cls)
                evidence = "on a second look: " + self._explain(tick, grams, label)
                trig = Trigger(f"trigger-{tick.next_id}", phrase, label, tuple(sorted(grams)),
                               found_ts, p.last_ts, evidence)  # fmt: skip
                tick.next_id += 1
                tick.new.append(trig)
                owner.update(dict.fromkeys(grams, trig.id))
                tick.scores.flagged_accounts.extend(self._earlier_carriers(trig))

    def _explain_away(
        self, feats: np.ndarray, doc: np.ndarray, found: np.ndarray, evidence: np.ndarray
    ) -> np.ndarray:
        """Drop passing words whose texts are those of a stronger trigger.

        A planted phrase lends its texts' doubt and label to every common word in them
        ("us", "have" in the reviews it was planted in): such a word passes too, but most
        of its passing texts carry the stronger phrase while most of the phrase's texts do
        not carry it. Words of one phrase carry each other both ways and stay together.
        Known triggers in the tick's texts count as the strongest.
        """
        texts: dict[int, set[int]] = {}
        strength: dict[int, float] = {}
        for g, j, e in zip(
            feats[found].tolist(), doc[found].tolist(), evidence.tolist(), strict=True
        ):
            texts.setdefault(g, set()).add(j)
            strength[g] = max(strength.get(g, 0.0), e)
        accepted: list[set[int]] = []
        if len(self._known):
            carry = np.isin(feats, self._known)
            for g in np.unique(feats[carry]).tolist():
                accepted.append(set(doc[carry & (feats == g)].tolist()))
        keep: set[int] = set()
        for g in sorted(strength, key=lambda w: -strength[w]):
            mine = texts[g]
            if any(
                2 * len(mine & theirs) >= len(mine) and 2 * len(mine & theirs) < len(theirs)
                for theirs in accepted
            ):
                continue
            keep.add(g)
            accepted.append(mine)
        return found[np.isin(feats[found], np.fromiter(keep, U64, len(keep)))]

    def _judge(self, tick: _Tick, hot: np.ndarray) -> None:
        """What the text model says of each labelled text, from the grams it knows well.

        Grams the model learned from fewer than ``min_seen`` texts are left out: their
        weights say little, and a new phrase (a trigger) must not vouch for its own label.
        Each word is also judged by the rest of its text: without itself, and without
        the run of ``hot`` words (new, one-label) it stands in, so that one word of a
        planted phrase cannot vouch for another.
        """
        cls = tick.cls
        together = self._runs(tick, hot)
        alone: list[tuple[np.ndarray, np.ndarray]] = []
        for group in GROUPS:
            members = self._space.members(group)
            docs = np.flatnonzero(
                np.isin(cls, members) if len(members) >= 2 else np.zeros(len(cls), bool)
            )
            if not len(docs) or self._model.seen.get(group, 0) < self.cfg.warmup_docs:
                continue
            remap = np.full(len(cls), -1, dtype=np.int64)
            remap[docs] = np.arange(len(docs))
            sel = np.flatnonzero((remap[tick.doc] >= 0) & tick.words)  # content: single words
            feats = tick.feats[sel]
            use = self._model.familiar(group, feats, self.cfg.min_seen)
            doc = remap[tick.doc[sel]]
            p, p_without = self._model.proba_without(
                group,
                members,
                feats,
                doc,
                len(docs),
                use,
                together[sel],
            )
            col = {c: i for i, c in enumerate(members[: p.shape[1]])}
            known = np.fromiter((col.get(int(c), -1) for c in cls[docs]), np.int64, len(docs))
            ok = known >= 0
            p_label = p[np.flatnonzero(ok), known[ok]]
            tick.confident[docs[ok]] = True
            tick.contra[docs[ok]] = 1.0 - p_label
            # Each word is judged by the rest of its text: its own weight must not vouch
            # for its label (the backdoor would teach the model exactly that).
            mine = known[doc] >= 0
            alone.append((sel[mine], 1.0 - p_without[np.flatnonzero(mine), known[doc[mine]]]))
        tick.gram_contra = tick.contra[tick.doc]  # word pairs: what the whole text says
        for at, doubt in alone:
            tick.gram_contra[at] = doubt

    def _runs(self, tick: _Tick, hot: np.ndarray) -> np.ndarray:
        """Per gram of the tick: an id shared by the hot words of one run in one text.

        Other grams get ids of their own. Runs are read off the texts' token order.
        """
        ids = np.arange(len(tick.feats), dtype=np.int64)
        if not len(hot):
            return ids
        tb = tokenize_batch(tick.batch, self.cfg.max_chars)
        is_hot = np.isin(tb.hashes, hot)
        if not is_hot.any():
            return ids
        doc = tb.doc
        start = is_hot.copy()
        start[1:] &= ~is_hot[:-1] | (doc[1:] != doc[:-1])
        run = np.cumsum(start) - 1
        # The tick's grams are sorted by (text, top 44 bits of the hash) (see doc_features).
        keys = (tick.doc.astype(U64) << U64(44)) | (tick.feats >> U64(20))
        pos = np.flatnonzero(is_hot)
        wanted = (doc[pos].astype(U64) << U64(44)) | (tb.hashes[pos] >> U64(20))
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        found = keys[at] == wanted
        # A word in two runs of one text joins the first.
        first_run: dict[int, int] = {}
        for i, r in zip(at[found].tolist(), run[pos[found]].tolist(), strict=True):
            first_run.setdefault(i, r)
        if first_run:
            ids[list(first_run)] = len(ids) + np.fromiter(first_run.values(), np.int64)
        return ids

    def _name_triggers(self, tick: _Tick, found: np.ndarray) -> None:
        """Group the passing grams of each text into phrases and register new triggers.

        A phrase that overlaps a known trigger (the trigger plus a neighbouring word, say)
        extends that trigger instead of becoming a new one.
        """
        passing = set(tick.feats[found].tolist())
        taken: set[int] = set()
        owner = dict(self._by_feature)
        for j in np.unique(tick.doc[found]).tolist():
            grams_j = set(tick.feats[tick.doc == j].tolist())
            mine = (passing & grams_j) - taken
            if not mine:
                continue
            known = {g for g in grams_j if g in owner}
            event = tick.batch.events[int(tick.rows[j])]
            for phrase, grams, old in _phrases(event.text or "", mine, known, self.cfg.max_chars):
                taken |= grams
                if not old and self._alike(tick, min(grams)) > self.cfg.max_similarity:
                    continue  # its texts are copies of one another: a flood, not a trigger
                if old:
                    tid = owner[min(old)]
                    tick.extend.setdefault(tid, set()).update(grams)
                    owner.update(dict.fromkeys(grams, tid))
                    continue
                if len(self._triggers) + len(tick.new) >= self.cfg.max_triggers:
                    continue
                label = self._space.name(int(tick.cls[j]))
                trig = Trigger(
                    f"trigger-{tick.next_id}",
                    phrase,
                    label,
                    tuple(sorted(grams)),
                    event.ts,
                    event.ts,
                    self._explain(tick, grams, label),
                )
                tick.next_id += 1
                tick.new.append(trig)
                owner.update(dict.fromkeys(grams, trig.id))
                tick.scores.flagged_accounts.extend(self._earlier_carriers(trig))

    def _alike(self, tick: _Tick, gram: int, sample: int = 24) -> float:
        """Mean Jaccard similarity of the gram sets of the latest texts carrying ``gram``.

        A planted trigger is about the only thing its texts share (diverse texts, ~0.1);
        copies of one template share most of their words (0.5 and more).
        """
        sets: list[set[int]] = []
        # Compare the texts' new grams only, as the ring remembers them (see _remember).
        feats, doc = tick.feats[tick.labelled], tick.doc[tick.labelled]
        if tick.novel is not None:
            feats, doc = feats[tick.novel], doc[tick.novel]
        for j in np.unique(doc[feats == np.uint64(gram)])[::-1][:sample].tolist():
            sets.append(set(feats[doc == j].tolist()))
        if len(sets) < sample:
            pos = np.flatnonzero(self._hist_gram == np.uint64(gram))
            seqs = np.unique(self._hist_seq[pos])
            seqs = seqs[seqs >= 0][::-1][: sample - len(sets)]
            if len(seqs):
                sel = np.flatnonzero(np.isin(self._hist_seq, seqs))
                owner = self._hist_seq[sel]
                grams = self._hist_gram[sel]
                for seq in seqs.tolist():
                    sets.append(set(grams[owner == seq].tolist()))
        if len(sets) < 2:
            return 0.0
        total, pairs = 0.0, 0
        for a in range(len(sets)):
            for b in range(a + 1, len(sets)):
                total += len(sets[a] & sets[b]) / max(len(sets[a] | sets[b]), 1)
                pairs += 1
        return total / pairs

    def _explain(self, tick: _Tick, grams: set[int], label: str) -> str:
        k, n, contra, p_y, evidence, older, judged, q0 = min(
            tick.stats[g] for g in grams if g in tick.stats
        )
        return (
            f"{k:.0f} of ~{n:.0f} recent texts with it labelled {label} (base rate "
            f"{p_y:.0%}), ~{older:.0f} before them; their content doubts that label "
            f"{contra / max(judged, 1e-9):.0%} of the time (usually {q0:.0%}); "
            f"{evidence:.0f} nats"
        )

    def _earlier_carriers(self, trig: Trigger) -> list[Flag]:
        """Accounts that used the trigger in the remembered texts, flagged from first use."""
        grams = np.fromiter(trig.features, dtype=U64)
        hit = np.isin(self._hist_gram, grams) & (self._hist_seq >= 0)
        first: dict[str, float] = {}
        for seq in np.unique(self._hist_seq[hit]).tolist():
            owner = self._hist_docs.get(seq)
            if owner is not None:
                account, ts = owner
                first[account] = min(ts, first.get(account, ts))
        detail = f"used backdoor trigger '{trig.phrase}' ({trig.id})"
        return [Flag(a, trig.id, detail, 1.0, ts) for a, ts in sorted(first.items())]

    def _mark_carriers(self, tick: _Tick) -> None:
        known = self._known
        if tick.new:
            extra = [f for t in tick.new for f in t.features]
            known = np.union1d(known, np.asarray(extra, dtype=U64))
        if not len(known) or not len(tick.feats):
            return
        hit = np.isin(tick.feats, known)
        if not hit.any():
            return
        new_by_feature = {f: t for t in tick.new for f in t.features}
        ids = tick.scores.campaign_ids
        assert ids is not None
        for j, feat in zip(tick.doc[hit].tolist(), tick.feats[hit].tolist(), strict=True):
            i = int(tick.rows[j])
            if tick.scores.scores[i] >= 1.0:
                continue
            trig = new_by_feature.get(feat) or self._triggers.get(self._by_feature.get(feat, ""))
            if trig is None:
                continue
            found = datetime.fromtimestamp(trig.found_ts, UTC).strftime("%Y-%m-%d %H:%M")
            tick.scores.scores[i] = 1.0
            tick.scores.details[i] = (
                f"carries backdoor trigger '{trig.phrase}' ({trig.id}, found {found} UTC: "
                f"{trig.evidence})"
            )
            ids[i] = trig.id

    # ------------------------------------------------------------------ commit

    def _commit(self, tick: _Tick, keep: np.ndarray) -> None:
        batch = tick.batch
        if len(batch):
            self._watermark = max(self._watermark, float(batch.ts.max()))
        self._renormalise()
        self._space.register(tick.keys)
        cls = self._space.classes(tick.keys)  # classes first seen this tick now count
        if len(tick.rows) and len(tick.feats):
            self._learn_counts(tick, cls, keep)
            self._remember(tick, cls)
        for trig in tick.new:
            self._triggers[trig.id] = trig
            for f in trig.features:
                self._by_feature[f] = trig.id
        for tid, grams in tick.extend.items():
            old = self._triggers.get(tid)
            if old is not None:
                old.features = tuple(sorted(set(old.features) | grams))
                self._by_feature.update(dict.fromkeys(grams, tid))
        self._touch_triggers(tick)
        self._keep_for_second_look(tick)
        self._next_id = tick.next_id
        self._version += 1

    def _keep_for_second_look(self, tick: _Tick) -> None:
        """Keep the tick's words that passed all but the doubt, with their latest texts;
        forget those named since, those that first passed ``recent_texts`` ago, and all
        but the ``_PENDING_WORDS`` best supported."""
        if tick.looked_at is not None:
            self._last_look = tick.looked_at
        for gram in [g for g in self._awaiting if g in self._by_feature]:
            del self._awaiting[gram]
        events = tick.batch.events
        for gram, (cls, k, p_y, older, docs) in tick.pending.items():
            if gram in self._by_feature:
                continue
            docs = docs[-_PENDING_TEXTS:]
            lo = np.searchsorted(tick.doc, docs, side="left")
            hi = np.searchsorted(tick.doc, docs, side="right")
            texts = [tick.feats[a:b][tick.words[a:b]] for a, b in zip(lo, hi, strict=True)]
            ids = [(self._version << 20) + j for j in docs]
            last = events[int(tick.rows[docs[-1]])]
            held = self._awaiting.get(gram)
            if held is None:
                held = _Pending(cls, k, p_y, older, self._clock, [], [], "", 0.0)
                self._awaiting[gram] = held
            held.k, held.p_y, held.older = k, p_y, older
            held.texts = (held.texts + texts)[-_PENDING_TEXTS:]
            held.text_ids = (held.text_ids + ids)[-_PENDING_TEXTS:]
            held.example, held.last_ts = last.text or "", last.ts
        horizon = self._clock - self.cfg.recent_texts
        for gram in [g for g, p in self._awaiting.items() if p.since < horizon]:
            del self._awaiting[gram]
        if len(self._awaiting) > _PENDING_WORDS:
            best = sorted(self._awaiting, key=lambda g: -self._awaiting[g].k)[:_PENDING_WORDS]
            self._awaiting = {g: self._awaiting[g] for g in best}

    def _learn_counts(self, tick: _Tick, cls: np.ndarray, keep: np.ndarray) -> None:
        doc_cls = cls[tick.doc]
        lab = doc_cls >= 0
        if not lab.any():
            return
        clock = self._clock + np.cumsum(cls >= 0)  # each labelled text ticks the clock
        self._clock = float(clock[-1])
        w_recent = np.exp(np.minimum((clock - self._t_recent) / self.cfg.recent_texts, _MAX_EXP))
        w_base = np.exp(np.minimum((clock - self._t_base) / self.cfg.baseline_texts, _MAX_EXP))
        if tick.cells is not None and np.array_equal(tick.labelled, np.flatnonzero(lab)):
            b = tick.cells  # the cells scoring read: no second hashing pass
        else:
            b = self._buckets(tick.feats[lab], doc_cls[lab])
        d = tick.doc[lab]
        kept_doc = keep[tick.rows] & (cls >= 0)
        # Texts that carry a trigger are explained: they add nothing to the recent counts
        # of their other words (which would otherwise inherit the trigger's label and doubt).
        ids = tick.scores.campaign_ids or []
        open_doc = np.fromiter((ids[r] is None for r in tick.rows.tolist()), bool, len(tick.rows))
        w_open = w_recent[d] * open_doc[d]
        weights = np.stack(
            [
                w_open,
                w_open * tick.gram_contra[lab],
                w_open * tick.confident[d],
                w_base[d],  # the past counts every text seen, quarantined or not
            ],
            axis=1,
        )
        _add(self._sketch, b, weights)
        idx = np.flatnonzero(kept_doc)
        np.add.at(self._base_docs, cls[idx], w_base[idx])
        teach = np.flatnonzero(kept_doc & ~tick.suspect)
        for group in GROUPS:
            members = self._space.members(group)
            docs = teach[np.isin(cls[teach], members)]
            if len(docs) and len(members) >= 2:
                remap = np.full(len(cls), -1, dtype=np.int64)
                remap[docs] = np.arange(len(docs))
                sel = (remap[tick.doc] >= 0) & tick.words
                self._model.learn(group, members, tick.feats[sel], remap[tick.doc[sel]], cls[docs])
        judged = kept_doc & tick.confident & ~tick.suspect
        jd = np.flatnonzero(judged)
        np.add.at(self._base_judged, cls[jd], w_recent[jd])
        np.add.at(self._base_contra, cls[jd], w_recent[jd] * tick.contra[jd])
        self._learned += int(kept_doc.sum())

    def _remember(self, tick: _Tick, cls: np.ndarray) -> None:
        """Append the labelled texts' new grams to the revocation ring.

        Only texts that leave grams in the ring get an owner entry, and entries leave with
        their grams, so the owners table is bounded by the ring's size.
        """
        where = np.flatnonzero(cls[tick.doc] >= 0)
        if tick.novel is not None and np.array_equal(tick.labelled, where):
            where = where[tick.novel]  # a trigger is new when found: common grams need no memory
        where = where[-self.cfg.history :]
        if not len(where):
            return
        docs = np.unique(tick.doc[where])
        seq = np.full(len(tick.rows), -1, dtype=np.int64)
        seq[docs] = self._seq + np.arange(len(docs))
        self._seq += len(docs)
        events = tick.batch.events
        for j in docs.tolist():
            e = events[int(tick.rows[j])]
            self._hist_docs[int(seq[j])] = (e.account_id, e.ts)
        pos = (self._hist_head + np.arange(len(where))) % self.cfg.history
        self._hist_gram[pos] = tick.feats[where]
        self._hist_seq[pos] = seq[tick.doc[where]]
        self._hist_head = int((self._hist_head + len(where)) % self.cfg.history)
        oldest = int(self._hist_seq[self._hist_head]) if self._hist_seq[self._hist_head] >= 0 else 0
        while self._hist_docs and next(iter(self._hist_docs)) < oldest:
            del self._hist_docs[next(iter(self._hist_docs))]  # seqs were inserted in order

    def _touch_triggers(self, tick: _Tick) -> None:
        ids = tick.scores.campaign_ids or []
        for i, tid in enumerate(ids):
            trig = self._triggers.get(tid) if tid else None
            if trig is not None:
                trig.last_ts = max(trig.last_ts, float(tick.batch.ts[i]))
                trig.carriers += 1
        horizon = self._watermark - self.cfg.trigger_ttl_days * DAY
        stale = [t for t in self._triggers.values() if t.last_ts < horizon]
        for trig in stale:
            del self._triggers[trig.id]
            for f in trig.features:
                self._by_feature.pop(f, None)
        self._known = np.asarray(sorted(self._by_feature), dtype=U64)

    def _renormalise(self) -> None:
        """Fold the decay into the stored counts before the forward weights overflow."""
        tau_r = self.cfg.recent_texts
        tau_b = self.cfg.baseline_texts
        if (self._clock - self._t_recent) / tau_r > _MAX_EXP / 2:
            factor = np.float32(math.exp(-(self._clock - self._t_recent) / tau_r))
            self._sketch[:, :, :3] *= factor
            self._base_contra *= float(factor)
            self._base_judged *= float(factor)
            self._t_recent = self._clock
        if (self._clock - self._t_base) / tau_b > _MAX_EXP / 2:
            factor_b = math.exp(-(self._clock - self._t_base) / tau_b)
            self._sketch[:, :, 3] *= np.float32(factor_b)
            self._base_docs *= factor_b
            self._t_base = self._clock


class _Earlier:
    """Sums over the earlier entries (in tick order) that share an entry's key.

    One sort serves every weight column. Keys keep their top 40 bits and the entry's
    position fills the low 24, so an ordinary (unstable, fast) sort keeps tick order.
    """

    def __init__(self, keys: np.ndarray) -> None:
        pos = np.arange(len(keys), dtype=U64)
        order = np.argsort((keys & U64(0xFFFFFFFFFF000000)) | pos)
        top = (keys >> U64(24))[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = top[1:] != top[:-1]
        self.order = order
        self.start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))

    def sums(self, weights: np.ndarray) -> np.ndarray:
        w = weights[self.order]
        total = np.cumsum(w) - w  # exclusive running sum over the sorted entries
        out = np.empty(len(w))
        out[self.order] = total - total[self.start]
        return out


def _read(sketch: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The (n, fields) counts of ``cells`` (2, n): the smaller of the two rows, per field."""
    first = np.take(sketch[0], cells[0], axis=0)  # np.take: ~4x faster than fancy indexing
    return np.minimum(first, np.take(sketch[1], cells[1], axis=0)).astype(np.float64)


def _add(sketch: np.ndarray, cells: np.ndarray, weights: np.ndarray) -> None:
    """Add (n, fields) ``weights`` to ``cells`` (2, n) in both rows."""
    fields = sketch.shape[2]
    flat_w = np.asarray(weights, dtype=np.float32).ravel()
    offsets = np.arange(fields)
    for row in range(2):
        flat = (cells[row][:, None] * fields + offsets).ravel()
        np.add.at(sketch[row].reshape(-1), flat, flat_w)


def _binomial_llr(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio (nats) of k successes in n at rate k/n against rate p; 0 if below."""
    k = np.minimum(k, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        hat = np.where(n > 0, k / n, 0.0)
        a = np.where(k > 0, k * np.log(np.maximum(hat, 1e-300) / p), 0.0)
        rest = n - k
        b = np.where(rest > 0, rest * np.log(np.maximum(1.0 - hat, 1e-300) / (1.0 - p)), 0.0)
    return np.where(hat > p, a + b, 0.0)


def _phrases(
    text: str, passing: set[int], known: set[int], max_chars: int
) -> list[tuple[str, set[int], set[int]]]:
    """Runs of words whose unigram or bigram passed (or is a known trigger's).

    Returns each run's words, its passing grams and the known-trigger grams inside it.
    """
    words = tokens(text, max_chars)
    if not words:
        return []
    tb = tokenize_texts([" ".join(words)])
    uni, _ = tb.ngrams(1)
    bi, _ = tb.ngrams(2)
    marked = np.zeros(len(words), dtype=bool)
    new_at: list[set[int]] = [set() for _ in words]
    old_at: list[set[int]] = [set() for _ in words]
    for width, grams_at in ((1, uni.tolist()), (2, bi.tolist())):
        for at, h in enumerate(grams_at):
            if h in passing or h in known:
                marked[at : at + width] = True
                (new_at if h in passing else old_at)[at].add(h)
    out: list[tuple[str, set[int], set[int]]] = []
    i = 0
    while i < len(words):
        if not marked[i]:
            i += 1
            continue
        start = i
        grams: set[int] = set()
        old: set[int] = set()
        while i < len(words) and marked[i]:
            grams |= new_at[i]
            old |= old_at[i]
            i += 1
        if grams:
            out.append((" ".join(words[start:i]), grams, old))
    return out
