"""`mmrobust data download` and `verify` end to end against an HTTP server on loopback: a good
download, corrupted ones (nothing installed), an interrupted one resumed with a Range request,
an unreachable or dead source, and the one-line messages of the command line."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_cli

from mmrobust import MMRobustError
from mmrobust.data import download as dl
from mmrobust.data.registry import DatasetInfo, Download, Release

# The toy release: DATA/ with two recordings and an info file, shipped inside a zip under a
# versioned top folder (as GitHub and Zenodo archives do), plus one gzip file checked by content.
RELEASE = {
    "DATA/info.csv": b"subject,age\ns01,54\n",
    "DATA/s01/s01_01.csv": b"x,y\n" + b"1.5,2.5\n" * 40_000,
    "DATA/s01/s01_02.csv": b"x,y\n" + b"3.5,4.5\n" * 30_000,
}
EXTRA = b"\x00\x01" * 5000


def _tree_sha256(files: dict[str, bytes]) -> str:
    lines = sorted(f"{path}\t{hashlib.sha256(data).hexdigest()}\n" for path, data in files.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _zip(files: dict[str, bytes], top: str = "toy-release-1a2b3c/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(top + "README.md", b"# toy\n")
        for path, data in files.items():
            zf.writestr(top + path, data)
    return buffer.getvalue()


class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1, honouring `Range: bytes=N-`; a path in
    `cut` has its next response cut after that many bytes (the connection then closes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ranged = self.headers.get("Range")
                server.requests.append((self.path, ranged))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(ranged.removeprefix("bytes=").rstrip("-")) if ranged else 0
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(len(body) - start))
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                if self.path in server.cut:
                    payload = payload[: server.cut.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.files["/toy.zip"] = _zip(RELEASE)
    s.files["/extra.bin.gz"] = gzip.compress(EXTRA)
    yield s
    s.close()


def _info(server: Server, tree: str = _tree_sha256(RELEASE)) -> DatasetInfo:
    return DatasetInfo(
        "toy",
        homepage="https://example.org/toy",
        release=Release("toy", ("DATA/*.csv", "DATA/s*/*.csv"), "toy/DATA/sXX/*.csv", 3, tree, also=("toy/extra.gz",)),
        downloads=(
            Download(f"{server.url}/toy.zip", "toy/DATA", unpack="zip", find="info.csv"),
            Download(f"{server.url}/extra.bin.gz", "toy/extra.gz", gunzipped_sha256=hashlib.sha256(EXTRA).hexdigest()),
        ),
    )


def _left(root: Path) -> list[Path]:
    """Everything below the data dir except partial downloads kept for resuming."""
    return sorted(p for p in root.rglob("*") if dl.WORK not in p.parts)


def test_a_good_download_lands_in_the_official_layout_and_verifies(server: Server, tmp_path: Path) -> None:
    info = _info(server)
    installed = dl.download("toy", info, tmp_path)
    assert installed == [tmp_path / "toy" / "DATA", tmp_path / "toy" / "extra.gz"]
    for path, data in RELEASE.items():
        assert (tmp_path / "toy" / path).read_bytes() == data
    assert not (tmp_path / "toy" / "DATA" / "README.md").exists()  # only the folder holding info.csv
    assert not (tmp_path / dl.WORK).exists()  # no partial downloads or staging left
    assert dl.verify("toy", info, tmp_path) == [
        "toy/DATA/sXX/*.csv: 3 files of the official release (SHA-256 of every file)",
        "toy/extra.gz: matches",
    ]
    assert dl.download("toy", info, tmp_path) == []  # already there: nothing fetched again
    assert len(server.requests) == 2


def test_a_corrupted_archive_installs_nothing(server: Server, tmp_path: Path) -> None:
    server.files["/toy.zip"] = _zip({**RELEASE, "DATA/s01/s01_02.csv": b"x,y\n1,2\n"})
    with pytest.raises(MMRobustError) as e:
        dl.download("toy", _info(server), tmp_path)
    assert str(e.value).startswith("toy: the downloaded files are not the official release (the files under ")
    assert "nothing was installed" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "toy").exists() and not (tmp_path / dl.WORK).exists()


def test_a_checksum_mismatch_is_one_line_and_deletes_the_download(server: Server, tmp_path: Path) -> None:
    server.files["/extra.bin.gz"] = gzip.compress(EXTRA + b"!")
    with pytest.raises(MMRobustError, match=r"^checksum mismatch for http://127\.0\.0\.1:\d+/extra\.bin\.gz: got "):
        dl.download("toy", _info(server), tmp_path)
    assert _left(tmp_path) == [] and not list((tmp_path / dl.WORK).rglob("*.gz"))


def test_an_interrupted_download_resumes_with_a_range_request(server: Server, tmp_path: Path) -> None:
    info = _info(server)
    server.cut["/toy.zip"] = 100_000
    with pytest.raises(MMRobustError, match=r"interrupted after 0\.1 MB .*; run the same command again to resume it"):
        dl.download("toy", info, tmp_path)
    assert _left(tmp_path) == []  # nothing installed, the partial file kept aside
    assert (tmp_path / dl.WORK / "toy" / "toy.zip").stat().st_size == 100_000
    dl.download("toy", info, tmp_path)
    assert ("/toy.zip", "bytes=100000-") in server.requests
    assert (tmp_path / "toy" / "DATA" / "s01" / "s01_01.csv").read_bytes() == RELEASE["DATA/s01/s01_01.csv"]
    assert not (tmp_path / dl.WORK).exists()


def test_an_unreachable_source_says_what_to_do_by_hand(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: as good as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    item = Download(f"http://127.0.0.1:{port}/toy.zip", "toy/DATA", unpack="zip", find="info.csv")
    info = DatasetInfo("toy", homepage="https://example.org/toy", downloads=(item,))
    with pytest.raises(MMRobustError) as e:
        dl.download("toy", info, tmp_path)
    assert str(e.value).startswith(f"cannot download http://127.0.0.1:{port}/toy.zip (URLError: ")
    assert str(e.value).endswith(
        f"if offline, download http://127.0.0.1:{port}/toy.zip by hand (official page: https://example.org/toy), "
        f"unpack it and move the folder holding info.csv to {tmp_path / 'toy' / 'DATA'}, "
        "then run `mmrobust data verify toy`"
    )


def test_a_dead_link_is_named(server: Server, tmp_path: Path) -> None:
    del server.files["/toy.zip"]
    with pytest.raises(MMRobustError, match=r"\(HTTP 404 Not Found\): the link may be dead or need a manual step; "):
        dl.download("toy", _info(server), tmp_path)
    assert _left(tmp_path) == []


def test_an_archive_member_escaping_its_folder_is_refused(server: Server, tmp_path: Path) -> None:
    server.files["/toy.zip"] = _zip({**RELEASE, "../../evil.csv": b"x"}, top="")
    with pytest.raises(MMRobustError, match=r"is not a readable zip archive \(unsafe member name '\.\./\.\./evil"):
        dl.download("toy", _info(server), tmp_path)
    assert not list(tmp_path.rglob("evil.csv")) and _left(tmp_path) == []


def test_verify_names_a_damaged_release(server: Server, tmp_path: Path) -> None:
    info = _info(server)
    dl.download("toy", info, tmp_path)
    (tmp_path / "toy" / "DATA" / "s01" / "s01_02.csv").write_bytes(b"x,y\n")
    with pytest.raises(MMRobustError, match=r"^toy: the files under .*toy differ from the official release"):
        dl.verify("toy", info, tmp_path)
    (tmp_path / "toy" / "DATA" / "s01" / "s01_02.csv").unlink()
    with pytest.raises(MMRobustError, match=r"^toy: 2 of the release's 3 files are under .*; re-extract"):
        dl.verify("toy", info, tmp_path)


# --- the command line ---------------------------------------------------------------------------
def test_cli_download_and_verify(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmrobust.cli

    monkeypatch.setattr(mmrobust.cli, "dataset_info", lambda name: _info(server))
    code, out, _ = run_cli(["data", "download", "toy", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and f"ok: toy is in {tmp_path}" in out
    server.files["/extra.bin.gz"] = gzip.compress(b"other")
    (tmp_path / "toy" / "extra.gz").write_bytes(server.files["/extra.bin.gz"])
    code, _, err = run_cli(["data", "verify", "toy", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "extra.gz: checksum mismatch" in err and len(err.strip().splitlines()) == 1


def test_cli_download_of_a_corrupted_source_exits_2_in_one_line(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmrobust.cli

    monkeypatch.setattr(mmrobust.cli, "dataset_info", lambda name: _info(server, tree="0" * 64))
    code, _, err = run_cli(["data", "download", "toy", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "not the official release" in err and not (tmp_path / "toy").exists()


@pytest.mark.parametrize("name", ["mosi", "basicmotions"])
def test_cli_download_of_a_manual_source_says_where_to_get_it(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["data", "download", name, "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot be downloaded automatically; get it from http" in err and "mmrobust data verify" in err


def test_part_of_a_release_already_there_is_named_before_fetching(server: Server, tmp_path: Path) -> None:
    info = _info(server)
    second = Download(f"{server.url}/more.zip", "toy/MORE", unpack="zip", find="x.csv")
    info = DatasetInfo("toy", release=info.release, downloads=(*info.downloads, second))
    (tmp_path / "toy" / "DATA").mkdir(parents=True)
    with pytest.raises(MMRobustError, match=r"toy/DATA is there but not the rest of toy's release: remove it"):
        dl.download("toy", info, tmp_path)
    assert server.requests == []
