"""scripts/answer.py and scripts/label_studio_answer.py, which play the person in the docs' labeling sessions: they
answer from a truth file, and bad input (a missing file or column, an id without a true label, no token, no server)
gets a message instead of a traceback, with the request left as it was."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest


def test_answer_fills_the_request_from_the_truth_file(tmp_path, run_script):
    request, truth = tmp_path / "stage-001.csv", tmp_path / "truth.csv"
    request.write_text("id,label\nb.png,\na.png,\n")
    truth.write_text("id,label\na.png,3\nb.png,7\nc.png,1\n")
    done = run_script("answer.py", str(request), str(truth))
    assert done.returncode == 0, done.stderr
    assert request.read_text() == "id,label\nb.png,7\na.png,3\n"


@pytest.mark.parametrize("case", ["unknown id", "missing truth", "no id column"])
def test_answer_names_bad_input_and_leaves_the_request(tmp_path, case, run_script):
    request, truth = tmp_path / "stage-001.csv", tmp_path / "truth.csv"
    request.write_text("id,label\na.png,\nz.png,\n" if case != "no id column" else "name,label\na.png,\n")
    if case != "missing truth":
        truth.write_text("id,label\na.png,3\n")
    before = request.read_text()
    done = run_script("answer.py", str(request), str(truth))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    expected = {"unknown id": "'z.png'", "missing truth": "does not exist", "no id column": "no id column"}[case]
    assert expected in done.stderr and request.read_text() == before


class _FakeLabelStudio(BaseHTTPRequestHandler):
    """The three calls label_studio_answer makes: list a project's tasks, get one task, post an annotation."""

    tasks: dict[int, dict] = {}
    posted: dict[int, list] = {}

    def _reply(self, body: object, code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != "Token secret":
            return self._reply({"detail": "no"}, 401)
        url = urlparse(self.path)
        if url.path == "/api/tasks" and parse_qs(url.query)["project"] == ["1"]:
            return self._reply({"tasks": [{k: v for k, v in t.items() if k != "predictions"}
                                          for t in self.tasks.values()]})
        return self._reply(self.tasks[int(url.path.rsplit("/", 1)[1])])

    def do_POST(self):  # noqa: N802
        task = int(self.path.split("/")[3])
        self.posted[task] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["result"]
        self._reply({"id": task})

    def log_message(self, *args):
        pass


def _choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


@pytest.fixture
def label_studio():
    def task(i, rid, request, predicted=None, annotated=0):
        return {"id": i, "data": {"robustal_id": rid, "robustal_request": request}, "total_annotations": annotated,
                "predictions": [{"result": _choice(predicted)}] if predicted else []}

    _FakeLabelStudio.tasks = {1: task(1, "a.png", "stage-001", predicted="3"),   # right: confirmed
                              2: task(2, "b.png", "stage-001", predicted="1"),   # wrong: corrected
                              3: task(3, "c.png", "stage-001"),                  # no prediction
                              4: task(4, "d.png", "stage-001", annotated=1),     # answered already
                              5: task(5, "e.png", "stage-002")}                  # another request
    _FakeLabelStudio.posted = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_label_studio_answer_confirms_right_predictions_and_corrects_wrong_ones(tmp_path, label_studio, run_script):
    truth = tmp_path / "truth.csv"
    truth.write_text("id,label\na.png,3\nb.png,7\nc.png,5\nd.png,0\ne.png,2\n")
    done = run_script("label_studio_answer.py", label_studio, "1", "stage-001", str(truth),
                      env={"LABEL_STUDIO_TOKEN": "secret"})
    assert done.returncode == 0, done.stderr
    assert _FakeLabelStudio.posted == {1: _choice("3"), 2: _choice("7"), 3: _choice("5")}
    assert "annotated 3 tasks of stage-001; 1 of 2 predictions confirmed, 1 corrected" in done.stdout


def test_label_studio_answer_names_what_is_wrong(tmp_path, label_studio, run_script):
    truth = tmp_path / "truth.csv"
    truth.write_text("id,label\na.png,3\n")
    cases = [({"LABEL_STUDIO_TOKEN": None}, "LABEL_STUDIO_TOKEN is not set"),
             ({"LABEL_STUDIO_TOKEN": "wrong"}, "answered 401"),
             ({"LABEL_STUDIO_TOKEN": "secret"}, "have no label in")]
    for env, expected in cases:
        done = run_script("label_studio_answer.py", label_studio, "1", "stage-001", str(truth), env=env)
        assert done.returncode != 0 and "Traceback" not in done.stderr and expected in done.stderr, done.stderr
    assert _FakeLabelStudio.posted == {}
    done = run_script("label_studio_answer.py", "http://127.0.0.1:9", "1", "stage-001", str(truth),
                      env={"LABEL_STUDIO_TOKEN": "secret"})
    assert done.returncode != 0 and "no Label Studio at http://127.0.0.1:9" in done.stderr
