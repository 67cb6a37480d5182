"""The Gmail emulator answers as the real API does (shapes from providers.md and the
discovery document), over real HTTP."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
import pytest

from tests.emulators import gmail as gmail_emulator
from tests.emulators.gmail import GmailState
from tests.emulators.server import RunningServer, serve

TOKEN = "ya29.emulator-test"
NOW = datetime.now(UTC)


@pytest.fixture
def api() -> Iterator[tuple[GmailState, httpx.Client]]:
    state = GmailState()
    state.add_user("u1", TOKEN, "me@example.com")
    server: RunningServer = serve(gmail_emulator.create_app(state))
    client = httpx.Client(
        base_url=server.url + "/gmail/v1/users/me",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    yield state, client
    client.close()
    server.stop()


def mail(subject: str, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "A <a@example.com>"
    message["Subject"] = subject
    message.set_content(f"body of {subject}\n")
    if attachment is not None:
        message.add_attachment(attachment, maintype="image", subtype="png", filename="p.png")
    return message.as_bytes()


def unb64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_list_paging_query_and_empty_answer(api: tuple[GmailState, httpx.Client]) -> None:
    state, client = api
    assert client.get("/messages").json() == {"resultSizeEstimate": 0}
    ids = [
        state.add_message("u1", mail(f"m{i}"), internal_date=NOW - timedelta(days=i))
        for i in range(5)
    ]
    state.add_message("u1", mail("spam"), labels=["SPAM"], internal_date=NOW)
    first = client.get("/messages", params={"maxResults": 2}).json()
    assert [m["id"] for m in first["messages"]] == ids[:2]  # newest first, spam left out
    assert first["resultSizeEstimate"] == 5
    second = client.get(
        "/messages", params={"maxResults": 2, "pageToken": first["nextPageToken"]}
    ).json()
    assert [m["id"] for m in second["messages"]] == ids[2:4]
    after = int((NOW - timedelta(days=2, hours=12)).timestamp())
    recent = client.get("/messages", params={"q": f"after:{after} -in:spam -in:trash"}).json()
    assert [m["id"] for m in recent["messages"]] == ids[:3]
    everything = client.get("/messages", params={"includeSpamTrash": "true"}).json()
    assert everything["resultSizeEstimate"] == 6
    bad = client.get("/messages", params={"pageToken": "garbage"})
    assert bad.status_code == 400


def test_formats_full_tree_raw_and_attachments(api: tuple[GmailState, httpx.Client]) -> None:
    state, client = api
    png = b"\x89PNG\r\n" + bytes(range(200))
    raw = mail("with file", png)
    message_id = state.add_message("u1", raw)
    full = client.get(f"/messages/{message_id}").json()  # format=full is the default
    assert full["payload"]["mimeType"] == "multipart/mixed"
    assert full["payload"]["partId"] == ""
    text, image = full["payload"]["parts"]
    assert (text["partId"], image["partId"]) == ("0", "1")
    assert unb64url(text["body"]["data"]) == b"body of with file\n"
    assert image["filename"] == "p.png"
    assert "data" not in image["body"]
    assert image["body"]["size"] == len(png)
    fetched = client.get(f"/messages/{message_id}/attachments/{image['body']['attachmentId']}")
    assert unb64url(fetched.json()["data"]) == png
    assert isinstance(full["internalDate"], str)
    assert isinstance(full["historyId"], str)
    assert unb64url(client.get(f"/messages/{message_id}?format=raw").json()["raw"]) == raw
    minimal = client.get(f"/messages/{message_id}?format=minimal").json()
    assert "payload" not in minimal
    assert minimal["labelIds"] == ["INBOX", "UNREAD"]
    metadata = client.get(
        f"/messages/{message_id}", params={"format": "metadata", "metadataHeaders": "Subject"}
    ).json()
    assert metadata["payload"]["headers"] == [{"name": "Subject", "value": "with file"}]
    missing = client.get("/messages/ffffffffffffffff")
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["reason"] == "notFound"


def test_history_records_no_change_and_expiry(api: tuple[GmailState, httpx.Client]) -> None:
    state, client = api
    start = client.get("/profile").json()["historyId"]
    assert client.get("/history", params={"startHistoryId": start}).json() == {"historyId": start}
    added = state.add_message("u1", mail("new"))
    state.trash("u1", added)
    answer = client.get("/history", params={"startHistoryId": start}).json()
    kinds = [next(k for k in record if k not in ("id", "messages")) for record in answer["history"]]
    assert kinds == ["messagesAdded", "labelsAdded"]
    assert answer["history"][1]["labelsAdded"][0]["labelIds"] == ["TRASH"]
    assert int(answer["history"][0]["id"]) < int(answer["history"][1]["id"])
    assert answer["historyId"] == answer["history"][-1]["id"]
    state.history_keep = 3  # a horizon: older starting points expire as history grows
    for _ in range(3):
        state.relabel("u1", added, add=["STARRED"], remove=[])
        state.relabel("u1", added, add=[], remove=["STARRED"])
    horizon = client.get("/history", params={"startHistoryId": answer["historyId"]})
    assert horizon.status_code == 404
    latest = client.get("/profile").json()["historyId"]
    recent = client.get("/history", params={"startHistoryId": str(int(latest) - 2)}).json()
    assert len(recent["history"]) == 2
    state.history_keep = None
    state.expire_history("u1")
    expired = client.get("/history", params={"startHistoryId": start})
    assert expired.status_code == 404
    assert expired.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "errors": [
                {
                    "message": "Requested entity was not found.",
                    "domain": "global",
                    "reason": "notFound",
                }
            ],
            "status": "NOT_FOUND",
        }
    }


def test_bearer_check_and_quota(api: tuple[GmailState, httpx.Client]) -> None:
    state, client = api
    refused = client.get("/profile", headers={"Authorization": "Bearer stale"})
    assert refused.status_code == 401
    assert refused.json()["error"]["errors"][0]["reason"] == "authError"
    state.set_quota(60, burst=3)  # one unit per second, three at once
    statuses = [client.get("/profile").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]
    limited = client.get("/profile")
    assert limited.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"


def test_batch_maps_content_ids_in_any_order(api: tuple[GmailState, httpx.Client]) -> None:
    state, client = api
    ids = [state.add_message("u1", mail(f"b{i}")) for i in range(6)]
    ids.append("0000000000000000")  # a message that does not exist
    body = "".join(
        f"--xyz\r\nContent-Type: application/http\r\nContent-ID: <call-{n}>\r\n\r\n"
        f"GET /gmail/v1/users/me/messages/{m}?format=minimal HTTP/1.1\r\n\r\n"
        for n, m in enumerate(ids)
    )
    response = client.post(
        str(client.base_url).split("/gmail/")[0] + "/batch/gmail/v1",
        content=(body + "--xyz--\r\n").encode(),
        headers={"Content-Type": "multipart/mixed; boundary=xyz"},
    )
    assert response.status_code == 200
    boundary = re.search(r"boundary=(\S+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    parts = response.text.split(f"--{boundary}")[1:-1]
    answers = {}
    for part in parts:
        content_id = re.search(r"Content-ID: <response-(call-\d+)>", part).group(1)  # type: ignore[union-attr]
        status = int(re.search(r"HTTP/1.1 (\d+)", part).group(1))  # type: ignore[union-attr]
        answers[content_id] = (status, part.rsplit("\r\n\r\n", 1)[1])
    assert set(answers) == {f"call-{n}" for n in range(7)}
    order = [int(re.search(r"response-call-(\d+)", p).group(1)) for p in parts]  # type: ignore[union-attr]
    assert order != sorted(order)  # answers come back in any order
    for n, message_id in enumerate(ids[:-1]):
        status, text = answers[f"call-{n}"]
        assert status == 200
        assert f'"id": "{message_id}"' in text
    assert answers["call-6"][0] == 404
    assert state.count("messages.get") == 7


def test_a_listing_follows_every_change_between_two_pages(
    api: tuple[GmailState, httpx.Client],
) -> None:
    """The emulator keeps one search per mailbox change: a message added, trashed, relabelled
    or deleted between two listings is seen by the second one."""
    state, client = api
    ids = [
        state.add_message("u1", mail(f"m{i}"), internal_date=NOW - timedelta(days=i))
        for i in range(3)
    ]

    def listed() -> list[str]:
        return [m["id"] for m in client.get("/messages").json().get("messages", [])]

    assert listed() == ids
    newest = state.add_message("u1", mail("new"), internal_date=NOW + timedelta(minutes=1))
    assert listed() == [newest, *ids]
    state.trash("u1", ids[0])
    assert listed() == [newest, *ids[1:]]
    state.relabel("u1", ids[1], add=["SPAM"])
    assert listed() == [newest, ids[2]]
    state.delete_message("u1", newest)
    assert listed() == [ids[2]]
    assert [
        m["id"] for m in client.get("/messages", params={"q": "in:spam"}).json()["messages"]
    ] == [ids[1]]
