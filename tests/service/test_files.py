"""The local store's artifacts at signed, expiring API URLs (embedded mode)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from tests.service.helpers import Server


def test_artifact_urls_download_the_stored_bytes(http: httpx.Client, server: Server, finished_job: dict):
    artifacts = finished_job["artifacts"]
    assert set(artifacts) == {"video", "canonical", "deformation"}
    for name, content_type in [("video", "video/mp4"), ("canonical", "image/png"), ("deformation", None)]:
        artifact = artifacts[name]
        assert artifact["url"].startswith(f"{server.url}/files/jobs/{finished_job['id']}/")
        r = httpx.get(artifact["url"])  # a plain client, no base URL: the URL is absolute
        assert r.status_code == 200
        assert len(r.content) == artifact["bytes"]
        assert r.content == server.blobs.get(server.jobs.get(finished_job["id"]).artifacts[name].key)
        if content_type:
            assert r.headers["content-type"] == content_type == artifact["content_type"]


def test_each_get_signs_fresh_urls(http: httpx.Client, finished_job: dict):
    url = finished_job["artifacts"]["video"]["url"]
    later = http.get(f"/jobs/{finished_job['id']}").json()["artifacts"]["video"]["url"]
    assert int(parse_qs(urlsplit(later).query)["exp"][0]) >= int(parse_qs(urlsplit(url).query)["exp"][0])
    assert httpx.get(later).status_code == 200


def test_forged_or_altered_urls_are_403(server: Server, finished_job: dict):
    url = finished_job["artifacts"]["canonical"]["url"]
    path, query = url.split("?")
    params = parse_qs(query)
    exp, sig = params["exp"][0], params["sig"][0]
    forged_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    other_key = path.replace("canonical.png", "video.mp4")

    for bad in [
        f"{path}?exp={exp}&sig={forged_sig}",
        f"{path}?exp={int(exp) + 3600}&sig={sig}",  # a later expiry is not covered by the signature
        f"{other_key}?exp={exp}&sig={sig}",  # the signature is for another file
        f"{path}?exp={exp}",
        path,
        f"{path}?exp=soon&sig={sig}",
        f"{path}?exp=%C2%B2&sig={sig}",  # "²": a digit to str.isdigit(), not to int()
        f"{path}?exp={exp}&sig=%C3%A9{sig[1:]}",  # a non-ASCII signature
        f"{path}?exp=%D9%A1%D9%A2&sig={sig}",  # Arabic-Indic digits
    ]:
        r = httpx.get(bad)
        assert r.status_code == 403, bad
        assert "invalid file URL signature" in r.json()["detail"]


def test_an_expired_url_is_410(server: Server, finished_job: dict):
    key = server.jobs.get(finished_job["id"]).artifacts["canonical"].key
    url = f"{server.url}/{server.blobs.presign(key, -1)}"  # signed with the server's secret, expired a second ago

    r = httpx.get(url)
    assert r.status_code == 410
    assert "expired" in r.json()["detail"]


def test_a_signed_url_cannot_leave_the_storage_folder(server: Server, finished_job: dict):
    """Even a correctly signed key that climbs out of the folder is not served."""
    key = "jobs/../../../../etc/passwd"
    exp = 2**40
    sig = server.blobs._signature(key, exp)
    r = httpx.get(f"{server.url}/files/jobs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd?exp={exp}&sig={sig}")
    assert r.status_code == 404
    assert (
        r.json()["detail"] == "no such file (it may have been deleted)"
    )  # the route ran and refused the key


def test_a_signed_url_of_a_deleted_file_is_404(server: Server, finished_job: dict):
    key = server.jobs.get(finished_job["id"]).artifacts["video"].key
    server.blobs.path(key).unlink()
    r = httpx.get(f"{server.url}/{server.blobs.presign(key, 60)}")
    assert r.status_code == 404
