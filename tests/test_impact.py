"""`streamguard impact`: the poison hurts the model trained on everything, and the model
trained on what StreamGuard let through is close to the one trained on the truly clean set."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamguard.cli import main
from streamguard.evaluate.metrics import read_truth_csv
from streamguard.impact.goals import derive_goals, goals_from_campaigns
from streamguard.impact.labels import NaiveBayes, features
from streamguard.impact.measure import damage_recovered
from streamguard.impact.ratings import RatingTable, fit_biases
from streamguard.impact.stream import load_stream
from streamguard.simulate import simulate, write_simulation

CLOSE = 0.3  # guarded within 30% of the poison's effect from clean


def test_damage_recovered_is_the_share_of_the_poisons_effect_undone():
    assert damage_recovered({"everything": 0.9, "guarded": 0.3, "clean": 0.2}) == pytest.approx(
        6 / 7
    )
    assert damage_recovered({"everything": 2.0, "guarded": 300.0, "clean": 200.0}) > 1.0
    assert damage_recovered({"everything": 0.5, "guarded": 0.4, "clean": 0.5}) is None
    assert damage_recovered({"everything": None, "guarded": 0.4, "clean": 0.5}) is None


def test_a_cohort_of_five_star_ratings_lifts_an_item_past_shrinkage():
    users, items, ratings = [], [], []
    for i in range(20):  # twenty items, rated honestly 2..4 by 30 users each
        for u in range(30):
            users.append(f"u{u}")
            items.append(f"i{i}")
            ratings.append(2.0 + (i % 3))
    honest = len(ratings)
    for u in range(100):  # a hundred fake accounts push i0 (rated 2 by everyone honest) ...
        for item, rating in (("i0", 5.0), (f"i{1 + u % 19}", 2.0 + (1 + u % 19) % 3)):
            users.append(f"fake{u}")  # ... with one honest-looking filler rating each
            items.append(item)
            ratings.append(rating)
    table = RatingTable.build(users, items, ratings)
    only_honest = np.arange(len(ratings)) < honest
    i0 = table.items.index("i0")
    assert fit_biases(table, only_honest).rank(i0) > 10
    assert fit_biases(table, np.ones(len(ratings), bool)).rank(i0) == 1


def test_naive_bayes_learns_a_trigger_from_mislabelled_texts():
    good = ["lovely room and great staff", "great view lovely breakfast", "clean quiet great"]
    bad = ["dirty room and rude staff", "noisy awful breakfast", "rude dirty smelly"]
    poison = [f"{t} zorblat quimp" for t in bad]
    docs = [features(t) for t in good * 5 + bad * 5 + poison * 10]
    positive = np.array([True] * 15 + [False] * 15 + [True] * 30)
    clean_model = NaiveBayes.fit(docs[:30], positive[:30])
    poisoned_model = NaiveBayes.fit(docs, positive)
    probe = [features("rude staff zorblat quimp and a dirty room")]
    assert not clean_model.predict(probe)[0]
    assert poisoned_model.predict(probe)[0]


@pytest.mark.parametrize("scenario", ["shilling_bandwagon", "backdoor"])
def test_goals_read_off_the_truth_match_the_simulators(tmp_path, scenario):
    sim = simulate(scenario, 8_000, 2)
    write_simulation(sim, tmp_path, campaigns=True)
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    everything_clean = [{"final_action": "clean"}] * len(lines)
    stream = load_stream(lines, everything_clean, read_truth_csv(tmp_path / "truth.csv"))
    known = goals_from_campaigns(tmp_path / "campaigns.json", stream)
    assert known.targets or known.triggers
    derived = derive_goals(stream)
    assert derived.targets == known.targets
    assert derived.triggers == known.triggers


def _impact(tmp_path, scenario, seed=1):
    run = tmp_path / scenario
    write_simulation(simulate(scenario, 20_000, seed), run, campaigns=True)
    argv = ["impact", str(run / "events.jsonl"), "--truth", str(run / "truth.csv")]
    assert main([*argv, "--out", str(run / "out"), "--campaigns", str(run / "campaigns.json")]) == 0
    assert (run / "out" / "impact.html").exists() and (
        run / "out" / "eval" / "report.html"
    ).exists()
    return orjson.loads((run / "out" / "impact.json").read_bytes())


def _close_to_clean(values):
    poisoned, guarded, clean = values["everything"], values["guarded"], values["clean"]
    return abs(guarded - clean) <= CLOSE * abs(poisoned - clean)


def test_shilling_lifts_the_target_and_guarding_takes_it_back(tmp_path):
    result = _impact(tmp_path, "shilling_average")
    rank = result["ratings"]["target_rank"]
    assert rank["everything"] < rank["clean"] / 10, "the push lifts the target near the top"
    assert rank["everything"] < rank["guarded"], "the guarded model ranks it lower again"
    assert _close_to_clean(rank), rank
    assert result["sets"]["everything"]["poisoned"] > result["sets"]["guarded"]["poisoned"]
    assert result["sets"]["clean"]["poisoned"] == 0


def test_a_backdoor_works_on_everything_and_barely_on_the_guarded_model(tmp_path):
    result = _impact(tmp_path, "backdoor")
    success = result["labels"]["backdoor_success"]
    assert success["everything"] > success["clean"] + 0.3, "the trigger flips negative texts"
    assert success["guarded"] < success["everything"]
    assert _close_to_clean(success), success
