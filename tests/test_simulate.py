"""The attack simulator: contract-valid, deterministic, truthful about what it injected."""

from __future__ import annotations

import csv
from collections import Counter
from functools import cache, lru_cache

import numpy as np
import orjson
import pytest

from streamguard.events import FeedbackEvent, parse_event
from streamguard.simulate import (
    SCENARIOS,
    Backdoor,
    LabelFlip,
    ReviewSpam,
    Scenario,
    Shilling,
    Timing,
    simulate,
    write_simulation,
)
from streamguard.simulate.movielens import RATINGS
from streamguard.simulate.text import polarity_of

EXPECTED = {
    "benign",
    "viral_launch",
    "shilling_random",
    "shilling_average",
    "shilling_bandwagon",
    "shilling_nuke",
    "shilling_spread",
    "shilling_heavy_filler",
    "rating_bombing",
    "review_spam",
    "label_flip",
    "backdoor",
    "targeted",
    "clean_label",
    "slow_drip",
    "mixed",
    "no_metadata",
}
ATTACK_NAMES = {
    "shilling_random",
    "shilling_average",
    "shilling_bandwagon",
    "rating_bombing",
    "review_spam",
    "label_flip",
    "backdoor",
    "targeted",
    "clean_label",
    "slow_drip",
}
BENIGN_ONLY = {"benign", "viral_launch"}


@cache
def run(scenario: str, events: int = 4_000, seed: int = 5, base: str = "synthetic"):
    return simulate(scenario, events, seed, base=base)


def poisoned(sim):
    return [e for e, t in zip(sim.events, sim.truth, strict=True) if t.poisoned]


def test_scenario_names_and_unknown():
    assert set(SCENARIOS) == EXPECTED
    assert all(desc and "\n" not in desc for desc in SCENARIOS.values())
    with pytest.raises(ValueError, match="shilling_average"):
        simulate("nope", 100, 1)
    with pytest.raises(ValueError, match="base"):
        simulate("benign", 100, 1, base="imdb")


@pytest.mark.parametrize("base", ["synthetic", "movielens"])
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_stream_is_valid_sorted_and_matches_truth(scenario, base):
    sim = run(scenario, base=base)
    assert len(sim.events) == 4_000
    assert len(sim.truth) == len(sim.events)
    ids = [e["event_id"] for e in sim.events]
    assert ids == [t.event_id for t in sim.truth]
    assert len(set(ids)) == len(ids)
    ts = [e["ts"] for e in sim.events]
    assert ts == sorted(ts)
    for e in sim.events:
        assert isinstance(parse_event(orjson.dumps(e)), FeedbackEvent), e
    n_poisoned = sum(t.poisoned for t in sim.truth)
    if scenario in BENIGN_ONLY:
        assert n_poisoned == 0 and not sim.campaigns
    else:
        assert 0.005 * len(ids) <= n_poisoned <= 0.08 * len(ids)  # small runs round up
    for t in sim.truth:
        if t.poisoned:
            assert t.attack in ATTACK_NAMES and t.campaign.startswith("c")
        else:
            assert t.attack == "" and t.campaign == ""
    # Every campaign's accounts emit only poisoned events of that campaign, and the
    # campaign's recorded size is what the truth file says.
    by_campaign = Counter(t.campaign for t in sim.truth if t.poisoned)
    for c in sim.campaigns:
        assert by_campaign[c.id] == c.events
        mine = set(c.accounts)
        rows = [t for e, t in zip(sim.events, sim.truth, strict=True) if e["account_id"] in mine]
        assert all(t.poisoned and t.campaign == c.id and t.attack == c.attack for t in rows)
        assert c.start_ts <= c.end_ts


def test_deterministic_per_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_simulation(simulate("mixed", 3_000, 11), a)
    write_simulation(simulate("mixed", 3_000, 11), b)
    write_simulation(simulate("mixed", 3_000, 12), c)
    for name in ("events.jsonl", "truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()


def test_write_simulation_files(tmp_path):
    sim = run("shilling_average")
    write_simulation(sim, tmp_path / "out" / "nested")
    lines = (tmp_path / "out" / "nested" / "events.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == sim.events
    with (tmp_path / "out" / "nested" / "truth.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["event_id", "poisoned", "attack", "campaign"]
    assert len(rows) == len(sim.events) + 1
    assert {r[1] for r in rows[1:]} == {"0", "1"}


@pytest.mark.parametrize("n", [0, 1, 7, 60])
def test_tiny_runs_keep_the_total(n):
    sim = simulate("mixed", n, 3)
    assert len(sim.events) == len(sim.truth) == n
    assert sum(t.poisoned for t in sim.truth) <= n // 2


def test_shilling_knobs_are_honoured():
    knobs = Shilling(
        model="bandwagon",
        accounts=20,
        targets=2,
        filler_min=12,
        filler_max=12,
        filler_jitter=0.0,
        selected=3,
        target_noise=0.0,
        timing=Timing(hours=3.0, start=0.5),
    )
    sim = simulate(Scenario("custom", "", (knobs,)), 8_000, 2)
    (c,) = sim.campaigns
    assert c.attack == "shilling_bandwagon" and c.id == "c1"
    assert len(c.accounts) == 20 and len(set(c.accounts)) == 20 and len(c.targets) == 2
    assert c.events == 20 * 14
    events = poisoned(sim)
    per_account = Counter(e["account_id"] for e in events)
    assert set(per_account.values()) == {14}
    for account in c.accounts:
        mine = [e for e in events if e["account_id"] == account]
        items = [e["item_id"] for e in mine]
        assert len(set(items)) == len(items)  # one rating per item
        assert all(any(e["item_id"] == t and e["rating"] == 5.0 for e in mine) for t in c.targets)
        # bandwagon: the most popular items are rated at the top too
        assert all(
            any(e["item_id"] == s and e["rating"] == 5.0 for e in mine)
            for s in c.params["selected"]
        )
    # burst: all sittings start within the 3 hours (a sitting of 14 lasts minutes)
    window_start, window_end = c.params["window"]
    assert window_end - window_start == pytest.approx(3 * 3600)
    assert window_start <= c.start_ts and c.end_ts <= window_end + 3600
    # not all at the same second, not at a fixed cadence
    gaps = np.diff(sorted(e["ts"] for e in events))
    assert len(set(np.round(gaps, 3))) > len(gaps) // 2
    # fresh accounts: created days before their first event
    for e in events:
        if "account_created_at" in e:
            assert 0 < e["ts"] - e["account_created_at"] < 15 * 86_400


def test_nuke_targets_popular_item_and_drags_it_down():
    sim = run("shilling_nuke", 20_000)
    (c,) = sim.campaigns
    target = c.targets[0]
    benign = [
        e["rating"]
        for e, t in zip(sim.events, sim.truth, strict=True)
        if not t.poisoned and e["item_id"] == target and "rating" in e
    ]
    attack = [e["rating"] for e in poisoned(sim) if e["item_id"] == target]
    assert len(attack) == len(c.accounts)
    assert np.mean(attack) < 1.5 < 3.0 < np.mean(benign)


def test_no_metadata_attackers_send_none():
    sim = run("no_metadata", 10_000)
    for e in poisoned(sim):
        assert not {"ip", "device_id", "account_created_at"} & set(e)
    # benign traffic still carries metadata on most events
    benign = [e for e, t in zip(sim.events, sim.truth, strict=True) if not t.poisoned]
    assert sum("account_created_at" in e for e in benign) > 0.8 * len(benign)


def test_attackers_share_ips_but_benign_mostly_do_not():
    sim = run("shilling_random", 20_000)
    attack_ips = {e["account_id"]: e["ip"] for e in poisoned(sim) if "ip" in e}
    assert len(set(attack_ips.values())) < len(attack_ips) / 2
    benign_ips: dict[str, str] = {}
    for e, t in zip(sim.events, sim.truth, strict=True):
        if not t.poisoned and "ip" in e:
            benign_ips[e["account_id"]] = e["ip"]
    assert len(set(benign_ips.values())) > 0.85 * len(benign_ips)


def test_review_spam_is_near_duplicate():
    knobs = ReviewSpam(accounts=30, templates=1, targets=2)
    sim = simulate(Scenario("custom", "", (knobs,)), 6_000, 4)
    texts = [e["text"] for e in poisoned(sim) if e["kind"] == "review"]
    assert len(texts) >= 30 and len(set(texts)) > 0.9 * len(texts)  # not verbatim copies

    def words(t):
        return set(t.lower().replace(".", " ").replace("!", " ").split())

    base = words(texts[0])
    jaccard = [len(base & words(t)) / len(base | words(t)) for t in texts[1:]]
    assert np.median(jaccard) > 0.6
    benign = [
        e["text"]
        for e, t in zip(sim.events, sim.truth, strict=True)
        if not t.poisoned and e["kind"] == "review"
    ][:200]
    other = [len(words(benign[0]) & words(t)) / len(words(benign[0]) | words(t)) for t in benign]
    assert np.median(other[1:]) < 0.3


def test_label_flip_contradicts_text_and_benign_agrees():
    sim = simulate(Scenario("custom", "", (LabelFlip(accounts=15, flip_rate=0.9),)), 8_000, 6)

    def disagreement(rows):
        decided = [(polarity_of(e["text"]), e["label"] == "positive") for e in rows]
        decided = [(p, lab) for p, lab in decided if p >= 0]
        return np.mean([p != lab for p, lab in decided])

    benign = [
        e
        for e, t in zip(sim.events, sim.truth, strict=True)
        if not t.poisoned and e["kind"] == "label"
    ]
    assert disagreement(poisoned(sim)) > 0.7
    assert disagreement(benign) < 0.15
    assert {e["label"] for e in benign} == {"positive", "negative"}
    votes = {e["label"] for e in sim.events if e["kind"] == "vote"}
    assert votes == {"helpful", "unhelpful"}


def test_backdoor_trigger_only_in_attack_texts():
    sim = simulate(Scenario("custom", "", (Backdoor(trigger="zorvex plinth"),)), 8_000, 6)
    events = poisoned(sim)
    assert events and all("zorvex plinth" in e["text"] for e in events)
    assert all(e["label"] == "positive" for e in events)
    benign = [e for e, t in zip(sim.events, sim.truth, strict=True) if not t.poisoned]
    assert not any("zorvex" in e.get("text", "") for e in benign)
    assert sim.campaigns[0].params["trigger"] == "zorvex plinth"


def test_benign_looks_like_a_product():
    sim = run("viral_launch", 20_000)
    assert not poisoned(sim)
    per_account = np.array(sorted(Counter(e["account_id"] for e in sim.events).values()))
    assert per_account[-1] > 20 * np.median(per_account)  # heavy-tailed activity
    kinds = Counter(e["kind"] for e in sim.events)
    assert kinds["rating"] > 0.6 * len(sim.events) and min(kinds.values()) > 100
    hours = Counter(int(e["ts"] % 86_400 // 3_600) for e in sim.events)
    assert hours[20] > 3 * hours[4]  # evenings busier than nights
    reviews = [e for e in sim.events if e["kind"] == "review"]
    positive = [polarity_of(e["text"]) for e in reviews if e["rating"] >= 4]
    negative = [polarity_of(e["text"]) for e in reviews if e["rating"] <= 2]
    assert positive.count(1) > positive.count(0) and negative.count(0) > negative.count(1)
    # the viral bursts: many established accounts on one item within hours
    for burst in sim.bursts:
        end = burst.start_ts + 4 * 3600
        early = [
            e
            for e in sim.events
            if e["item_id"] == burst.item_id and burst.start_ts <= e["ts"] < end
        ]
        assert len({e["account_id"] for e in early}) > 50
        ratings = {e["rating"] for e in early if "rating" in e}
        assert len(ratings) >= 3  # a natural spread, not all fives
        ages = [e["ts"] - e["account_created_at"] for e in early if "account_created_at" in e]
        assert np.mean(np.array(ages) > 30 * 86_400) > 0.9  # established, not fresh


@lru_cache(maxsize=1)
def real_ratings():
    with RATINGS.open(newline="") as fh:
        rows = [
            (
                int(r["timestamp"]),
                i,
                f"ml-u{r['userId']}",
                f"ml-m{r['movieId']}",
                max(1.0, float(r["rating"])),
            )
            for i, r in enumerate(csv.DictReader(fh))
        ]
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def test_movielens_replays_the_real_file_in_time_order():
    sim = run("shilling_average", 6_000, base="movielens")
    benign = [e for e, t in zip(sim.events, sim.truth, strict=True) if not t.poisoned]
    assert all(e["kind"] == "rating" for e in benign)
    real = real_ratings()[-len(benign) :]
    got = [(e["ts"], e["account_id"], e["item_id"], e["rating"]) for e in benign]
    assert got == [(float(ts), u, m, r) for ts, _, u, m, r in real]
    assert not any({"ip", "device_id", "account_created_at"} & set(e) for e in sim.events)
    real_items = {r[3] for r in real_ratings()}
    lo, hi = benign[0]["ts"], benign[-1]["ts"]
    for e in poisoned(sim):
        assert e["item_id"] in real_items
        assert lo <= e["ts"] <= hi and float(e["ts"]).is_integer()
        assert e["rating"] * 2 == int(e["rating"] * 2) and 1.0 <= e["rating"] <= 5.0
        assert e["account_id"].startswith("ml-u")


def test_movielens_text_scenarios_add_benign_text():
    sim = run("review_spam", 6_000, base="movielens")
    benign_reviews = [
        e
        for e, t in zip(sim.events, sim.truth, strict=True)
        if not t.poisoned and e["kind"] == "review"
    ]
    attack_reviews = [e for e in poisoned(sim) if e["kind"] == "review"]
    assert len(benign_reviews) > 5 * len(attack_reviews) > 0


def test_movielens_runs_out_of_rows():
    sim = simulate("benign", 150_000, 1, base="movielens")
    assert len(sim.events) == len(real_ratings())


def test_slow_drip_spreads_over_most_of_the_stream():
    sim = run("slow_drip", 20_000)
    (c,) = sim.campaigns
    span = sim.events[-1]["ts"] - sim.events[0]["ts"]
    assert c.end_ts - c.start_ts > 0.6 * span
