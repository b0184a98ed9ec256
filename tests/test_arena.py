"""The efficient-attention arena: its meters (row errors, log-log slopes) against closed forms, a
quick run over every registered attention variant, the MQAR data and model, and the README
tables against the committed tinyattn/measurements/arena.json."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from tinyattn import Tensor, arena, data
from tinyattn import efficient as eff
from tinyattn.efficient.common import dense_attention

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXACT = ("exact",)


# ----------------------------------------------------------------------------------------------
# the meters
# ----------------------------------------------------------------------------------------------

def test_loglog_slope_recovers_known_exponents():
    L = np.array([256, 512, 1024, 2048, 4096])
    assert arena.loglog_slope(L, 3e-6 * L ** 2.0) == pytest.approx(2.0, abs=1e-12)
    assert arena.loglog_slope(L, 7.0 * L) == pytest.approx(1.0, abs=1e-12)
    assert arena.loglog_slope(L, np.full(5, 4.2)) == pytest.approx(0.0, abs=1e-12)
    # y = L^1.5, the last point doubled: the least-squares slope in closed form
    wobble = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    x, y = np.log(L), np.log(L ** 1.5 * wobble)
    expected = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert arena.loglog_slope(L, L ** 1.5 * wobble) == pytest.approx(expected, rel=1e-12)
    assert abs(expected - 1.5) > 1e-3  # the wobble moves the fit: the check above can tell
    with pytest.raises(ValueError, match="two or more"):
        arena.loglog_slope([256], [1.0])


def test_row_errors_are_per_row_relative_norms():
    exact = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])  # row norms 5, 1, 0
    out = np.array([[3.0, 4.5], [1.0, 0.2], [0.0, 0.0]])  # row errors 0.5 / 5, 0.2 / 1, 0 (0 / 0)
    err_max, err_mean = arena.row_errors(out, exact)
    assert err_max == pytest.approx(0.2) and err_mean == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    assert arena.row_errors(np.ones((1, 2)), np.zeros((1, 2)))[0] == np.inf  # nonzero where exact is 0
    with pytest.raises(ValueError, match=r"output \(2, 2\) and exact \(3, 2\)"):
        arena.row_errors(np.ones((2, 2)), np.ones((3, 2)))


# ----------------------------------------------------------------------------------------------
# a quick run over every registered variant
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick():
    return arena.scaling(sizes=(32, 128), error_max=128, budget=10.0)


def test_quick_run_has_one_row_per_registered_attention_variant_and_the_baseline(quick):
    names = [arena.BASELINE] + [v.name for v in eff.variants("attention")]
    assert list(quick) == names
    table = arena._summary_rows({"scaling": quick, "mqar": {}, "config": {"error_max": 128}})
    assert [re.match(r"\| `(\w+)` \|", row).group(1) for row in table[2:]] == names


def test_quick_run_measures_every_variant_at_every_size(quick):
    for name, r in quick.items():
        assert r["failed"] is None, (name, r["failed"])
        assert r["L"] == [32, 128] and r["error_L"] == [32, 128], name
        assert all(t > 0 for t in r["fwd_s"] + r["fwd_bwd_s"]), name
        assert all(b > 0 for b in r["fwd_peak"] + r["fwd_bwd_peak"]), name
        assert r["slopes"]["fwd_bwd_s"] == pytest.approx(arena.loglog_slope(r["L"], r["fwd_bwd_s"]))


def test_exact_variants_equal_softmax_attention_in_float64(quick):
    for name, r in quick.items():
        claim = r["claim"]
        if claim == "exact":
            assert max(r["err_max"]) <= 1e-10, (name, r["err_max"])
        if claim in ("exact", "exact under its mask"):
            assert max(r["ref_err_max"]) <= 1e-10, (name, r["ref_err_max"])


def test_the_error_meter_sees_a_band_mask():
    """sliding_window (w = 64) is softmax attention while L ≤ w + 1, and not beyond."""
    r = arena.scaling(sizes=(32, 256), error_max=256, budget=10.0,
                      names=("sliding_window",))["sliding_window"]
    assert r["err_max"][0] <= 1e-10 and r["err_max"][1] > 0.1, r["err_max"]


def test_length_options_are_fitted_to_short_sequences():
    """Nyström's 32 landmarks are capped at S, LSH's chunk of 32 becomes a divisor of S, and the
    tables say so; the contenders then run at MQAR's lengths S = 3P (P = 4 ... 32)."""
    nys, lsh = eff.get("nystrom").options, eff.get("lsh").options
    landmarks = [arena.options_at("nystrom", nys, S)["num_landmarks"] for S in (12, 24, 48, 96)]
    chunks = [arena.options_at("lsh", lsh, S)["chunk_size"] for S in (12, 24, 48, 96, 256)]
    assert landmarks == [12, 24, 32, 32] and chunks == [12, 24, 24, 32, 32]
    assert arena.options_at("flash", {"block_size": 128}, 12) == {"block_size": 128}
    assert arena.options_text("nystrom", nys) == "num_landmarks = min(32, S), pinv_iterations = 6"
    assert arena.options_text(arena.BASELINE, {}) == "—"
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 12, 8)) for _ in range(3))
    # with every token a landmark (m = S = 12) and the exact pseudo-inverse, Nyström is softmax attention
    fitted = arena._fitted("nystrom", eff.get("nystrom").reference)
    out = fitted(q, k, v, num_landmarks=32, pinv_iterations=None)
    np.testing.assert_allclose(out, dense_attention(q, k, v), rtol=1e-8, atol=1e-10)
    for name, _, attend, options in arena.contenders():
        for S in (12, 48):
            x = [Tensor(rng.standard_normal((2, 2, S, 8))) for _ in range(3)]
            assert attend(*x, is_causal=False, **options).shape == (2, 2, S, 8), (name, S)


# ----------------------------------------------------------------------------------------------
# MQAR
# ----------------------------------------------------------------------------------------------

def test_mqar_sequences_ask_for_every_key_once():
    tokens, targets = data.mqar_sequences(50, 7, np.random.default_rng(0))
    assert tokens.shape == targets.shape == (50, 21)
    keys, values, queries = tokens[:, 0:14:2], tokens[:, 1:14:2], tokens[:, 14:]
    assert (keys < data.MQAR_KEYS).all() and (values >= data.MQAR_KEYS).all()
    assert (values < data.MQAR_VOCAB_SIZE).all()
    assert (targets[:, :14] == data.MQAR_IGNORE).all()
    for k, v, q, t in zip(keys, values, queries, targets[:, 14:]):
        assert len(set(k)) == 7 and sorted(q) == sorted(k)
        assert [dict(zip(k, v))[x] for x in q] == list(t)
    with pytest.raises(ValueError, match="num_pairs must be an int in 1..64"):
        data.mqar_sequences(1, 65, np.random.default_rng(0))


def test_recall_net_attention_is_the_variant_passed_in():
    """Its blocks call ``attend`` with is_causal as configured; the logits have the vocabulary."""
    calls = []

    def attend(q, k, v, is_causal=False, **options):
        calls.append((q.shape, is_causal, options))
        return v

    net = arena.RecallNet(attend, {"window": 3}, data.MQAR_VOCAB_SIZE, max_len=12, d_model=16, num_heads=2)
    logits = net(data.mqar_sequences(3, 4, np.random.default_rng(0))[0])
    assert logits.shape == (3, 12, data.MQAR_VOCAB_SIZE)
    assert calls == [((3, 2, 12, 8), False, {"window": 3})] * 2


def test_a_short_mqar_training_reports_accuracy_per_pair_count():
    r = arena.train_mqar(arena._sdpa, {}, pairs=(2, 3), steps=40, n_test=32, d_model=32)
    assert list(r["accuracy"]) == [2, 3] and all(0 <= a <= 1 for a in r["accuracy"].values())
    assert r["final_loss"] < np.log(data.MQAR_VOCAB_SIZE)  # it has learned the answers are values


# ----------------------------------------------------------------------------------------------
# the committed results and the README tables
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def committed():
    return arena.load_results()


def _section(path: pathlib.Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text.split("<!-- arena:start -->\n", 1)[1].split("\n<!-- arena:end -->", 1)[0]


def test_readme_tables_equal_the_committed_arena_json(committed):
    assert _section(ROOT / "README.md") == arena.readme_markdown(committed)
    assert _section(ROOT / "benchmarks" / "README.md") == arena.markdown(committed)


def test_committed_arena_covers_every_registered_attention_variant(committed):
    names = [arena.BASELINE] + [v.name for v in eff.variants("attention")]
    assert list(committed["scaling"]) == names, "rerun `python -m tinyattn.arena --write`"
    assert list(committed["mqar"]) == names


def test_committed_arena_reproduces_the_known_results(committed):
    """Exact softmax attention solves MQAR at every pair count; it is measured and exact."""
    sc, mq = committed["scaling"], committed["mqar"]
    assert min(mq[arena.BASELINE]["accuracy"].values()) >= 0.95
    for name, r in sc.items():
        if r["claim"] == "exact":
            assert max(r["err_max"]) <= 1e-10, name
    assert sc[arena.BASELINE]["slopes"]["fwd_bwd_peak"] > 1.5  # the L x L scores
    assert committed["command"].startswith("python -m tinyattn.arena")


def test_cli_writes_json_and_both_sections(tmp_path):
    for rel in ("README.md", "benchmarks/README.md"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text("intro\n<!-- arena:start -->\nold\n<!-- arena:end -->\nrest\n",
                                    encoding="utf-8")
    out = tmp_path / "a.json"
    assert arena.main(["--sizes", "32", "64", "--no-mqar", "--write", "--root", str(tmp_path),
                       "--out", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["config"]["sizes"] == [32, 64] and written["mqar"] == {}
    assert _section(tmp_path / "README.md") == arena.readme_markdown(written)
    text = (tmp_path / "benchmarks" / "README.md").read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\nrest\n") and "old" not in text


def test_readme_mqar_paragraph_quotes_the_committed_accuracies(committed):
    """Every accuracy the README's "What MQAR shows" paragraph states is the committed one."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split("**What MQAR shows.**", 1)[1]
                    .split("\n\n", 1)[0].split())
    acc = {n: {int(P): a for P, a in r["accuracy"].items()} for n, r in committed["mqar"].items()}
    assert min(acc["sdpa"].values()) >= 0.995 and min(acc["flash"].values()) >= 0.995  # "1.00 at every P"
    quotes = {"linear": "linear attention falls from {:.2f} at P = 4 to {:.2f}",
              "performer": "Performer from {:.2f} to {:.2f}",
              "lsh": "LSH (shared-QK, a hard hash) from {:.2f} to {:.2f}"}
    for name, quote in quotes.items():
        assert quote.format(acc[name][4], acc[name][32]) in text, name
    assert max(acc["linformer"].values()) < 2 / 64  # "at chance (1/64)"
    for name, words in (("sliding_window", "sliding window"), ("nystrom", "Nyström"),
                        ("block_sparse", "block-sparse")):
        assert min(acc[name][P] for P in (4, 8, 16)) >= 0.995, name  # "solve P ≤ 16"
        assert f"{words} {acc[name][32]:.2f}" in text, name
