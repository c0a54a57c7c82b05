"""The `plateforme` channel: deposit on a real local Plateforme Agréée (AFNOR Flow Service over
HTTP), every request and response of which is validated against the official OpenAPI document."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from builders import insert_customer, insert_invoice
from treatment_runs import run_treatment

from postier.delivery.archive import DocumentArchive
from postier.delivery.local_pa import LocalPlatform, running_platform
from postier.delivery.plateforme import (
    TOKEN_MARGIN,
    FlowClient,
    FlowMissing,
    PlatformConfig,
    PlatformUnavailable,
    forget_tokens,
)
from postier.domain.limits import MAX_FILE_SIZE
from postier.errors import ConfigurationError
from postier.pipeline.context import Environment
from postier.pipeline.plateforme import deposit_pending, tracking_id

SIREN = "732829320"


@pytest.fixture(scope="module")
def platform_server() -> Iterator[LocalPlatform]:
    yield from running_platform()


@pytest.fixture
def platform(platform_server: LocalPlatform) -> Iterator[LocalPlatform]:
    platform_server.reset()
    forget_tokens()
    yield platform_server
    # Every request we made and every answer it gave conform to the AFNOR OpenAPI.
    assert platform_server.state.violations == []


@pytest.fixture
def config(platform: LocalPlatform) -> PlatformConfig:
    return PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": platform.env_url()})


@pytest.fixture
def env(db_dsn: str, tmp_path: Path, config: PlatformConfig) -> Environment:
    return Environment(dsn=db_dsn, home=tmp_path / "home", plateforme=config)


class Waits(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def sent_invoice(env: Environment, conn: psycopg.Connection, **customer: Any) -> str:
    """A B2B invoice of a `plateforme` customer, prepared and sent as the DAGs do."""
    cid = insert_customer(conn, **({"channel": "plateforme", "siren": SIREN} | customer))
    number = f"FP-{cid:05d}"
    insert_invoice(conn, cid, number=number)
    conn.commit()
    prepared = run_treatment(env, "factures_preparer_envoi")
    assert prepared["anomalies"] == []
    run_treatment(env, "factures_envoyer")
    return number


def archived_pdf(env: Environment, conn: psycopg.Connection, number: str) -> bytes:
    row = conn.execute(
        "SELECT d.location FROM documents d JOIN invoices i ON i.id = d.invoice_id "
        "WHERE i.number = %s AND d.kind = 'facture' ORDER BY d.version DESC LIMIT 1",
        (number,),
    ).fetchone()
    assert row is not None
    return DocumentArchive(env.archive_url).read(row[0])


def flow_row(conn: psycopg.Connection, number: str) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT f.status, f.flow_id, f.reason, f.tracking_id FROM plateforme_flows f "
        "JOIN invoices i ON i.id = f.invoice_id WHERE i.number = %s",
        (number,),
    )
    row = cur.fetchone()
    assert row is not None
    conn.commit()
    return dict(zip(("status", "flow_id", "reason", "tracking_id"), row, strict=True))


def exchanges(conn: psycopg.Connection, number: str) -> list[tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT e.status, e.report FROM exchanges e JOIN invoices i ON i.id = e.invoice_id "
        "WHERE i.number = %s AND e.kind = 'depot_plateforme' ORDER BY e.id",
        (number,),
    ).fetchall()
    conn.commit()
    return [(r[0], r[1]) for r in rows]


# ----------------------------------------------------------------------------- preparation


@pytest.mark.parametrize(
    ("customer", "reason"),
    [
        ({"siren": None, "siret": None}, "SIREN du client"),
        ({"siren": "123456789", "siret": None}, "SIREN du client"),
        ({"einvoicing_address": "552100554"}, "doit commencer par son SIREN 732829320"),
    ],
)
def test_preparation_refuses_a_plateforme_invoice_the_pa_could_not_route(
    db_dsn: str, tmp_path: Path, conn: psycopg.Connection, customer: dict[str, Any], reason: str
) -> None:
    env = Environment(dsn=db_dsn, home=tmp_path / "home")
    cid = insert_customer(conn, **({"channel": "plateforme", "siren": SIREN} | customer))
    insert_invoice(conn, cid, number="FP-REFUS")
    conn.commit()

    report = run_treatment(env, "factures_preparer_envoi", fails=True)

    (anomaly,) = report["anomalies"]
    assert anomaly["facture"] == "FP-REFUS" and reason in json.dumps(anomaly, ensure_ascii=False)
    state = conn.execute("SELECT send_state FROM invoices WHERE number = 'FP-REFUS'").fetchone()
    assert state == ("EN_ATTENTE",)


# ----------------------------------------------------------------------------------- deposit


def test_sent_invoice_is_deposited_once_as_its_archived_signed_facturx(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    number = sent_invoice(env, conn)

    summary = deposit_pending(env, by="jmartin")
    again = deposit_pending(env, by="jmartin")

    assert summary.deposited == [number] and again.deposited == []
    (flow,) = platform.state.flows
    pdf = archived_pdf(env, conn, number)
    assert flow.data == pdf
    assert flow.info == {
        "trackingId": flow_row(conn, number)["tracking_id"],
        "name": f"{number}.pdf",
        "processingRule": "B2B",
        "flowSyntax": "Factur-X",
        "flowProfile": "CIUS",
        "sha256": hashlib.sha256(pdf).hexdigest(),
    }
    assert flow_row(conn, number)["status"] == "deposee"
    assert flow_row(conn, number)["flow_id"] == flow.flow_id
    ((status, report),) = exchanges(conn, number)
    assert status == "deposee" and report["flux"] == flow.flow_id
    marked = conn.execute(
        "SELECT dematerialized, dematerialized_channel FROM invoices WHERE number = %s", (number,)
    ).fetchone()
    assert marked == (True, "plateforme")  # « Dématérialisée », like Artis and Chorus


def assert_found_by_the_next_run_not_deposited_again(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform, number: str
) -> None:
    """After a deposit of unknown outcome that the PA did receive: the invoice still waits, and
    the next run finds its flow instead of depositing it a second time."""
    assert flow_row(conn, number)["status"] == "preparee"
    assert len(platform.state.flows) == 1  # the PA did receive it

    second = deposit_pending(env, by="jmartin")

    assert second.found == [number] and second.deposited == []
    assert len(platform.state.flows) == 1
    assert flow_row(conn, number)["flow_id"] == platform.state.flows[0].flow_id
    ((status, report),) = exchanges(conn, number)
    assert status == "deposee" and "pas de second dépôt" in report["rapport"]


def test_retry_after_an_unknown_outcome_finds_the_flow_instead_of_depositing_twice(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform, config: PlatformConfig
) -> None:
    number = sent_invoice(env, conn)
    platform.answer_next("/v1/flows", 202, hang=3.0)
    impatient = dataclasses.replace(config, timeout=1.0)

    with FlowClient(impatient) as client:
        first = deposit_pending(env, by="jmartin", client=client)
    assert "incertain" in first.pending[number]
    assert_found_by_the_next_run_not_deposited_again(env, conn, platform, number)


def test_a_deposit_answered_without_a_flow_id_is_uncertain_and_searched_before_again(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    number = sent_invoice(env, conn)
    # A success without a flowId (the local PA does not keep the file): off the document.
    platform.answer_next("/v1/flows", 202)

    first = deposit_pending(env, by="jmartin")
    platform.state.violations.clear()
    second = deposit_pending(env, by="jmartin")

    assert "dépôt incertain" in first.pending[number] and "sans flowId" in first.pending[number]
    assert second.deposited == [number] and len(platform.state.flows) == 1
    searched = [path for path, _ in platform.state.calls if path.endswith("/search")]
    assert searched, "an uncertain deposit is looked up before being deposited again"


def test_a_recorded_flow_the_pa_never_received_is_deposited_by_the_next_run(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    number = sent_invoice(env, conn)
    platform.answer_next("/v1/flows", 503, retry_after="1")
    with FlowClient(dataclasses.replace(env.plateforme, attempts=1)) as client:  # type: ignore[arg-type]
        first = deposit_pending(env, by="jmartin", client=client)
    assert number in first.pending and flow_row(conn, number)["status"] == "preparee"

    second = deposit_pending(env, by="jmartin")

    assert second.deposited == [number] and len(platform.state.flows) == 1
    searched = [path for path, _ in platform.state.calls if path.endswith("/search")]
    assert searched, "a recorded flow is looked up before being deposited"


def test_429_and_503_are_retried_after_the_retry_after_the_pa_asks(
    env: Environment,
    conn: psycopg.Connection,
    platform: LocalPlatform,
    config: PlatformConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    number = sent_invoice(env, conn)
    platform.answer_next("/v1/flows", 429, retry_after="7")
    platform.answer_next("/v1/flows", 503, retry_after="2")
    waits = Waits()
    caplog.set_level(logging.INFO, logger="postier.delivery.plateforme")

    with FlowClient(config, sleep=waits) as client:
        summary = deposit_pending(env, by="jmartin", client=client)

    assert waits == [7.0, 2.0]
    assert summary.deposited == [number] and len(platform.state.flows) == 1
    assert f"{config.where} : HTTP 429, nouvel essai dans 7 s" in caplog.text


@pytest.mark.parametrize(
    "retry_after", ["121", "Wed, 21 Oct 2099 07:28:00 GMT", "Wed, 21 Oct 2099 07:28:00 -0000"]
)
def test_a_retry_after_longer_than_max_wait_is_not_waited_for(
    platform: LocalPlatform, config: PlatformConfig, retry_after: str
) -> None:
    platform.answer_next("/v1/flows/search", 503, retry_after=retry_after)
    waits = Waits()

    with FlowClient(config, sleep=waits) as client:
        with pytest.raises(PlatformUnavailable, match="HTTP 503"):
            client.find("T-ATTENTE")

    assert config.max_wait < 121 and waits == []


@pytest.mark.parametrize(
    ("status", "code", "message", "words"),
    [
        (400, "MISSING_REQUIRED_FIELD", "flowInfo incomplete", "requête refusée"),
        (413, "FILE_TOO_LARGE", "max 10 MB", "fichier trop volumineux"),
        (422, "BR-FR-12", "invalid buyer electronic address", "flux invalide"),
    ],
)
def test_a_refusal_is_recorded_on_the_invoice_with_the_pa_reason_and_not_retried(
    env: Environment,
    conn: psycopg.Connection,
    platform: LocalPlatform,
    status: int,
    code: str,
    message: str,
    words: str,
) -> None:
    number = sent_invoice(env, conn)
    platform.answer_next("/v1/flows", status, code=code, message=message)

    summary = deposit_pending(env, by="jmartin")
    again = deposit_pending(env, by="jmartin")

    reason = summary.refused[number]
    assert words in reason and code in reason and message in reason
    assert "avoir" in reason
    row = flow_row(conn, number)
    assert row["status"] == "refusee" and message in row["reason"]
    ((logged, report),) = exchanges(conn, number)
    assert logged == "refusee" and report["http"] == status and report["code"] == code
    assert again.deposited == [] and platform.state.flows == []


def test_pa_down_leaves_every_invoice_pending_and_the_next_run_deposits_them(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform, config: PlatformConfig
) -> None:
    first_number = sent_invoice(env, conn)
    second_number = sent_invoice(env, conn)
    down = dataclasses.replace(config, base_url="http://127.0.0.1:9/flow-service")

    with FlowClient(down) as client:
        summary = deposit_pending(env, by="jmartin", client=client)
    assert set(summary.pending) == {first_number, second_number}
    assert "injoignable" in summary.pending[first_number]

    later = deposit_pending(env, by="jmartin")

    assert sorted(later.deposited + later.found) == sorted([first_number, second_number])
    assert len(platform.state.flows) == 2


def test_two_sends_depositing_at_once_deposit_each_invoice_once(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    numbers = [sent_invoice(env, conn), sent_invoice(env, conn)]
    platform.state.deposit_delay = 0.5
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda _: deposit_pending(env, by="jmartin"), range(2)))

    assert sorted(summaries[0].deposited + summaries[1].deposited) == sorted(numbers)
    assert sorted(flow.info["name"] for flow in platform.state.flows) == [
        f"{n}.pdf" for n in sorted(numbers)
    ]


def test_token_is_cached_and_fetched_again_when_the_pa_no_longer_accepts_it(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    sent_invoice(env, conn)
    deposit_pending(env, by="jmartin")
    sent_invoice(env, conn)
    deposit_pending(env, by="jmartin")
    assert platform.state.tokens_issued == 1

    platform.state.tokens.clear()  # the PA expired every token it gave
    number = sent_invoice(env, conn)
    summary = deposit_pending(env, by="jmartin")

    assert summary.deposited == [number]
    assert platform.state.tokens_issued == 2
    assert [s for _, s in platform.state.calls].count(401) == 1


def test_a_token_about_to_expire_is_renewed_before_the_pa_refuses_it(
    platform: LocalPlatform, config: PlatformConfig
) -> None:
    platform.state.token_lifetime = int(TOKEN_MARGIN)  # expires within the margin at once

    with FlowClient(config) as client:
        client.find("T-JETON-1")
        client.find("T-JETON-2")

    assert platform.state.tokens_issued == 2
    assert 401 not in [s for _, s in platform.state.calls]


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>maintenance</html>",
        {"token_type": "Bearer", "expires_in": 3600},
        {"access_token": 7},
    ],
    ids=["not-json", "no-access-token", "token-not-a-string"],
)
def test_a_token_answer_without_a_token_is_platform_unavailable_in_french(
    env: Environment,
    conn: psycopg.Connection,
    platform: LocalPlatform,
    answer: bytes | dict[str, Any],
) -> None:
    number = sent_invoice(env, conn)
    platform.state.token_answer = answer

    summary = deposit_pending(env, by="jmartin")

    reason = summary.pending[number]
    assert "jeton d'accès non obtenu" in reason and "access_token" in reason
    assert platform.state.client_secret not in reason
    assert platform.state.flows == []


# ----------------------------------------------------------------------------- hostile answers


def huge_search_answer() -> dict[str, Any]:
    """A search answer past the size limit, valid against the document (a reason message has
    no maximum length)."""
    detail = {"level": "Error", "item": "file", "reasonCode": "X_TEST"}
    flow = {
        "flowId": "flux-enorme",
        "trackingId": "T-ENORME",
        "acknowledgement": {
            "status": "Error",
            "details": [detail | {"reasonMessage": "x" * (MAX_FILE_SIZE + 1)}],
        },
    }
    return {"results": [flow]}


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (500, {"message": "x" * (MAX_FILE_SIZE + 1)}),
        (200, {"body": huge_search_answer()}),
    ],
    ids=["error-answer", "search-answer"],
)
def test_an_answer_past_the_size_limit_is_read_no_further_and_unavailable_in_french(
    platform: LocalPlatform, config: PlatformConfig, status: int, answer: dict[str, Any]
) -> None:
    platform.answer_next("/v1/flows/search", status, **answer)

    with FlowClient(config) as client, pytest.raises(PlatformUnavailable) as failed:
        client.find("T-ENORME")

    assert str(failed.value).startswith(
        f"{config.where} : réponse de plus de {MAX_FILE_SIZE} octets (HTTP {status}), "
        "lecture arrêtée"
    )


def test_a_token_answer_past_the_size_limit_is_read_no_further_and_nothing_is_deposited(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform, config: PlatformConfig
) -> None:
    number = sent_invoice(env, conn)
    # A good token, then white space: valid JSON, past what Postier reads of any answer.
    platform.state.token_padding = MAX_FILE_SIZE

    first = deposit_pending(env, by="jmartin")

    assert first.pending[number].startswith(
        f"{config.where} : réponse de plus de {MAX_FILE_SIZE} octets (HTTP 200), "
        "lecture arrêtée ; rien n'a été déposé"
    )
    assert platform.state.flows == [] and platform.state.calls == [("/oauth/token", 200)]
    assert flow_row(conn, number)["status"] == "preparee"

    platform.state.token_padding = 0
    assert deposit_pending(env, by="jmartin").deposited == [number]
    assert len(platform.state.flows) == 1


def test_a_deposit_answer_past_the_size_limit_is_uncertain_and_never_deposited_twice(
    env: Environment, conn: psycopg.Connection, platform: LocalPlatform
) -> None:
    number = sent_invoice(env, conn)
    # The PA keeps the file, then answers with valid JSON padded past what Postier reads.
    platform.answer_next("/v1/flows", 202, padding=MAX_FILE_SIZE)

    first = deposit_pending(env, by="jmartin")

    reason = first.pending[number]
    assert "dépôt incertain" in reason
    assert f"réponse de plus de {MAX_FILE_SIZE} octets (HTTP 202), lecture arrêtée" in reason
    assert_found_by_the_next_run_not_deposited_again(env, conn, platform, number)


@pytest.mark.parametrize("search", ["find", "lifecycle_flows"])
def test_a_search_result_that_is_not_an_object_is_refused_in_french_without_the_answer(
    platform: LocalPlatform, config: PlatformConfig, search: str
) -> None:
    platform.answer_next("/v1/flows/search", 200, body={"results": ["<script>hostile</script>"]})

    with FlowClient(config) as client, pytest.raises(PlatformUnavailable) as failed:
        client.find("T-1") if search == "find" else client.lifecycle_flows(None)

    message = str(failed.value)
    assert message.startswith(f"{config.where} : réponse de recherche illisible")
    assert "hostile" not in message
    # The answer is off the document on purpose: what the PA was made to send.
    assert [v.split(":", 1)[0] for v in platform.state.violations] == [
        "response 200 /flow-service/v1/flows/search"
    ]
    platform.state.violations.clear()


@pytest.mark.parametrize("configured", ["POSTIER_PLATEFORME_URL", "postier_plateforme"])
def test_refused_credentials_name_the_setting_the_clerk_used(
    platform: LocalPlatform, configured: str
) -> None:
    if configured == "POSTIER_PLATEFORME_URL":
        config = PlatformConfig.from_env({configured: platform.env_url()})
    else:
        fields = json.loads(platform.airflow_connection())
        config = PlatformConfig.from_connection(
            None, None, fields["login"], fields["password"], fields["extra"]
        )
    wrong = dataclasses.replace(config, client_secret="pas-le-bon")

    with FlowClient(wrong) as client, pytest.raises(ConfigurationError) as refused:
        client.find("T-1")

    message = str(refused.value)
    assert "identifiants OAuth2 refusés" in message and configured in message
    other = "postier_plateforme" if configured == "POSTIER_PLATEFORME_URL" else "POSTIER_"
    assert other not in message


def test_downloading_a_flow_the_pa_does_not_have_is_flow_missing(
    platform: LocalPlatform, config: PlatformConfig
) -> None:
    with FlowClient(config) as client, pytest.raises(FlowMissing, match="HTTP 404"):
        client.download("flux-inconnu")


def test_no_secret_in_repr_errors_or_logs(
    env: Environment,
    conn: psycopg.Connection,
    platform: LocalPlatform,
    config: PlatformConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = platform.state.client_secret
    number = sent_invoice(env, conn)
    caplog.set_level(logging.DEBUG)
    # The PA busy on every try (the 429s are all answered to this client) …
    for _ in range(config.attempts):
        platform.answer_next("/v1/flows", 429, retry_after="0")
    with FlowClient(config, sleep=Waits()) as client:
        busy = deposit_pending(env, by="jmartin", client=client)
    assert platform.state.script == [] and "HTTP 429" in busy.pending[number]
    # … then unreachable, then back.
    down = dataclasses.replace(config, base_url="http://127.0.0.1:9/flow-service")
    with FlowClient(down) as client:
        failed = deposit_pending(env, by="jmartin", client=client)
    assert "injoignable" in failed.pending[number]
    ok = deposit_pending(env, by="jmartin")

    assert ok.deposited == [number]
    texts = [
        repr(config),
        repr(env),
        caplog.text,
        json.dumps(busy.pending),
        json.dumps(failed.pending),
    ]
    tokens = list(platform.state.tokens)
    assert tokens and not [t for t in texts for hidden in [secret, *tokens] if hidden in t]
    with pytest.raises(ConfigurationError) as error:
        PlatformConfig.from_env({"POSTIER_PLATEFORME_URL": f"https://c:{secret}@pa.example"})
    assert secret not in str(error.value) and "token_url" in str(error.value)
    wrong = dataclasses.replace(config, client_secret="not-" + secret)
    forget_tokens()
    with FlowClient(wrong) as client, pytest.raises(ConfigurationError) as refused:
        client.find(tracking_id(1))
    assert "identifiants OAuth2 refusés" in str(refused.value)
