"""Production traffic end to end: labels, split, stickiness, shadow, rollback, cache,
confidence and drift, against the real app and real ONNX sessions (in-process)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from modelkit import failing_model, publish, solid_png
from servers import sample

RED, BLUE, GREY = solid_png((250, 10, 10)), solid_png((10, 10, 250)), solid_png((128, 128, 128))
PNG = {"content-type": "image/png"}
LABELS = {"version_labels": {"stable": 1, "canary": 2}}


async def classify(roost: Any, image: bytes = RED, query: str = "", **headers: str) -> Any:
    r = await roost.client.post(
        f"/v1/classify?model=colours{query}", content=image, headers={**PNG, **headers}
    )
    assert r.status_code in (200, 503), r.text
    return r


async def metrics(roost: Any) -> str:
    return str((await roost.client.get("/metrics")).text)


async def test_a_request_may_name_a_version_by_label_in_v1_and_v2(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1, config=LABELS)
    publish(repo, "colours", 2)
    publish(repo, "colours", 3)  # the latest, unlabelled
    roost = await start_app(repo)
    await roost.wait_ready()
    assert (await classify(roost, query="&version=canary")).json()["version"] == 2
    assert (await classify(roost, query="&version=stable")).json()["version"] == 1
    assert (await classify(roost)).json()["version"] == 3  # no split: the latest
    path = "/v1/models/colours/versions/stable/classify"
    assert (await roost.client.post(path, content=RED, headers=PNG)).json()["version"] == 1
    image = {
        "name": "IMAGE",
        "shape": [1],
        "datatype": "BYTES",
        "data": [base64.b64encode(RED).decode()],
        "parameters": {"content_type": "base64"},
    }
    v2 = await roost.client.post(
        "/v2/models/colours/versions/canary/infer", json={"inputs": [image]}
    )
    assert v2.status_code == 200 and v2.json()["model_version"] == "2", v2.text
    r = await roost.client.post("/v1/classify?model=colours&version=blue", content=RED, headers=PNG)
    assert r.status_code == 404 and "no version labelled 'blue'" in r.text


async def test_labelled_versions_load_whatever_the_version_policy(
    repo: Path, start_app: Any
) -> None:
    # latest: 1 alone would load only version 3; the labels bring 1 and 2 in too.
    publish(repo, "colours", 1, config={**LABELS, "version_policy": {"latest": 1}})
    publish(repo, "colours", 2)
    publish(repo, "colours", 3)
    roost = await start_app(repo)
    await roost.wait_ready()
    detail = (await roost.client.get("/v1/models/colours")).json()
    assert [v["version"] for v in detail["versions"] if v["state"] == "ready"] == [1, 2, 3]
    assert detail["routing"]["version_labels"] == {"stable": 1, "canary": 2}


async def test_the_split_follows_its_weights_and_a_key_sticks(repo: Path, start_app: Any) -> None:
    publish(repo, "colours", 1, config={**LABELS, "traffic": {"stable": 75, "canary": 25}})
    publish(repo, "colours", 2)
    roost = await start_app(repo)
    await roost.wait_ready()

    async def versions(count: int, key: Callable[[int], str | None]) -> list[int]:
        answers = []
        for i in range(count):
            k = key(i)
            headers = {} if k is None else {"X-Roost-Route-Key": k}
            answers.append((await classify(roost, **headers)).json()["version"])
        return answers

    # Random: 300 draws at 25 %, mean 75, sd 7.5; +-5 sd bounds fail once in ~10^6 runs.
    drawn = await versions(300, lambda i: None)
    assert set(drawn) == {1, 2} and 75 - 37.5 < drawn.count(2) < 75 + 37.5
    # Sticky: one key, one version; 200 keys split as the weights (mean 50, sd 6.1).
    assert len(set(await versions(20, lambda i: "alice"))) == 1
    keyed = await versions(200, lambda i: f"user-{i}")
    assert 50 - 30.5 < keyed.count(2) < 50 + 30.5
    assert await versions(200, lambda i: f"user-{i}") == keyed  # the same keys, the same way


async def test_shadow_copies_never_delay_the_client_and_are_compared(
    repo: Path, start_app: Any
) -> None:
    config = {
        **LABELS,
        "traffic": {"stable": 100, "canary": 0},
        "shadow": {"label": "canary", "percent": 100},
    }
    publish(repo, "colours", 1, config=config)
    # Same model, labels in another order: its top-1 *label* differs for red, agrees for green.
    publish(repo, "colours", 2, labels=["blue", "green", "red"], references=[])
    roost = await start_app(repo)
    await roost.wait_ready()
    state = roost.app.state.roost
    canary = state.registry.get("colours", 2).batcher
    gate, entered = threading.Event(), threading.Event()
    real_run = canary._run_batch

    def gated(batch: np.ndarray, alone: bool, deadline: float) -> np.ndarray:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        return real_run(batch, alone, deadline)

    canary._run_batch = gated
    try:
        answer = await classify(roost)  # answered while the canary's session is held shut
        assert answer.status_code == 200 and answer.json()["version"] == 1
        await asyncio.to_thread(entered.wait, 30)
        assert state.shadows.in_flight == 1
        text = await metrics(roost)
        assert sample(text, "roost_shadow_requests_total", version="2", outcome="disagree") == 0
    finally:
        gate.set()
    green = solid_png((10, 250, 10))
    await classify(roost, image=green)
    for _ in range(3000):  # a hang guard only
        if state.shadows.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    text = await metrics(roost)
    assert sample(text, "roost_shadow_requests_total", version="2", outcome="disagree") == 1
    assert sample(text, "roost_shadow_requests_total", version="2", outcome="agree") == 1
    assert sample(text, "roost_shadow_duration_seconds_count", version="2") == 2
    # Copies are not answers: the client-facing counters saw version 1 only.
    assert sample(text, "roost_requests_total", version="2") == 0


async def test_a_failing_canary_is_rolled_back_and_says_why(repo: Path, start_app: Any) -> None:
    config = {
        **LABELS,
        "traffic": {"stable": 50, "canary": 50},
        "rollback": {"label": "canary", "min_requests": 4, "max_error_ratio": 0.5},
    }
    publish(repo, "colours", 1, config=config)
    publish(repo, "colours", 2, model=failing_model(), references=[])  # red >= 200 raises
    roost = await start_app(repo)
    await roost.wait_ready()
    codes = []
    for _ in range(200):  # the canary gets its 4 answers long before (p < 10^-40 otherwise)
        codes.append((await classify(roost)).status_code)
        detail = (await roost.client.get("/v1/models/colours")).json()
        if detail["routing"]["rolled_back"]:
            break
    assert codes.count(503) == 4  # every canary answer failed; the 4th tripped the rule
    reason = detail["routing"]["rolled_back"]["canary"]
    assert "5xx ratio 1.00 > 0.5 (4 of 4 requests" in reason
    assert detail["routing"]["traffic"] == {"stable": 50, "canary": 0.0}
    after = [(await classify(roost)).json()["version"] for _ in range(40)]
    assert after == [1] * 40
    text = await metrics(roost)
    assert sample(text, "roost_rollbacks_total", label="canary") == 1
    assert sample(text, "roost_traffic_weight", label="canary") == 0
    assert sample(text, "roost_traffic_weight", label="stable") == 50
    # A pinned request may still reach it: rollback takes the split's share, not the version.
    assert (await classify(roost, image=BLUE, query="&version=canary")).json()["version"] == 2


async def test_cached_answers_are_identical_and_skip_the_session(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1, config={"cache": {"max_mib": 1}})
    roost = await start_app(repo)
    await roost.wait_ready()
    first, second = (
        (await classify(roost, query="&top_k=3")),
        await classify(roost, query="&top_k=3"),
    )
    assert first.json() == second.json()
    other_k = (await classify(roost, query="&top_k=1")).json()
    assert other_k["results"][0]["predictions"] == first.json()["results"][0]["predictions"][:1]
    text = await metrics(roost)
    assert sample(text, "roost_cache_requests_total", result="miss") == 1
    assert sample(text, "roost_cache_requests_total", result="hit") == 2
    assert sample(text, "roost_images_total", model="colours") == 1  # one session run
    assert sample(text, "roost_cache_entries", model="colours") == 1
    assert sample(text, "roost_cache_bytes", model="colours") > 0
    assert sample(text, "roost_requests_total", code="200") == 3


async def test_low_confidence_answers_are_marked_uncertain(repo: Path, start_app: Any) -> None:
    publish(repo, "colours", 1, config={"min_confidence": 0.9})
    roost = await start_app(repo)
    await roost.wait_ready()
    grey = (await classify(roost, image=GREY)).json()["results"][0]
    red = (await classify(roost)).json()["results"][0]
    assert grey["uncertain"] is True and grey["predictions"][0]["score"] < 0.9
    assert red["uncertain"] is False
    text = await metrics(roost)
    assert sample(text, "roost_uncertain_results_total", model="colours") == 1
    assert sample(text, "roost_predictions_total", **{"class": "red"}) == 2  # grey ties: red
    assert sample(text, "roost_top1_score_count", model="colours") == 2


async def test_the_drift_gauge_moves_when_the_inputs_shift(repo: Path, start_app: Any) -> None:
    profile = {
        "images": 100,
        "source": "test split",
        "predicted_counts": [100, 0, 0],
        "confidence_counts": [0] * 9 + [100],
    }
    publish(
        repo, "colours", 1, config={"drift_window": 20}, card_extra={"prediction_profile": profile}
    )
    roost = await start_app(repo)
    await roost.wait_ready()

    async def drift() -> tuple[float, float, float]:
        text = await metrics(roost)
        return (
            sample(text, "roost_prediction_drift", kind="class"),
            sample(text, "roost_prediction_drift", kind="confidence"),
            sample(text, "roost_drift_window_answers", model="colours"),
        )

    for _ in range(20):
        await classify(roost)  # red, confidently: as on the test split
    same = await drift()
    assert same[2] == 20 and same[0] < 0.01 and same[1] < 0.01
    for _ in range(20):
        await classify(roost, image=BLUE)
    shifted = await drift()
    assert shifted[2] == 20 and shifted[0] > 1 and shifted[1] < 0.01  # sure, but of blue
    for _ in range(20):
        await classify(roost, image=GREY)
    assert (await drift())[1] > 1  # unsure now: the confidence histogram moved


async def test_policy_changes_apply_on_reload_without_reloading_sessions(
    repo: Path, start_app: Any
) -> None:
    publish(repo, "colours", 1, config={**LABELS, "traffic": {"stable": 100, "canary": 0}})
    publish(repo, "colours", 2)
    roost = await start_app(repo)
    await roost.wait_ready()
    registry = roost.app.state.roost.registry
    before = registry.get("colours", 1)
    assert (await classify(roost)).json()["version"] == 1
    config = {**LABELS, "traffic": {"stable": 0, "canary": 100}}
    (repo / "colours" / "config.json").write_text(json.dumps(config))
    assert (await roost.reload()).status_code == 200
    assert (await classify(roost)).json()["version"] == 2
    assert registry.get("colours", 1) is before  # the same session, not a reload


async def test_explanations_do_not_count_toward_a_latency_rollback(
    repo: Path, start_app: Any
) -> None:
    config = {**LABELS, "traffic": {"stable": 1, "canary": 1},
              "rollback": {"label": "canary", "min_requests": 1, "max_error_ratio": None,
                           "max_p95_latency_ms": 0.001}}  # fmt: skip
    publish(repo, "colours", 1, config=config)
    publish(repo, "colours", 2)
    roost = await start_app(repo)
    await roost.wait_ready()
    r = await roost.client.post("/v1/models/colours/explain?grid=4&version=canary",
                                content=RED, headers=PNG)  # fmt: skip
    assert r.status_code == 200, r.text
    detail = (await roost.client.get("/v1/models/colours")).json()
    assert detail["routing"]["rolled_back"] == {}
    # any classify is slower than 1 us: this one trips the rule
    await classify(roost, query="&version=canary")
    detail = (await roost.client.get("/v1/models/colours")).json()
    assert "p95 latency" in detail["routing"]["rolled_back"]["canary"]
