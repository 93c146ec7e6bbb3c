"""robustal against a real Label Studio, as a person uses it: one project for every round.

The ``label-studio`` package (1.23) is started on localhost from the executable named by ``ROBUSTAL_LABEL_STUDIO``
(``scripts/labelstudio-test`` installs it into its own virtual environment and runs these tests); without it the
tests are skipped, saying so. Marked ``labelstudio``: not in the default run (a first start migrates Label
Studio's database, about a minute).

Through Label Studio's API the test does what the README tells a person to do: create a project with robustal's
labeling config, add the pool folder as a Local Files storage (without it the images are not served), import each
request's task file, annotate the tasks (confirming the model's predictions where they are right), export the
project as JSON, JSON-MIN and CSV, and hand the exports to ``robustal label --answers``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from robustal.cli import main
from robustal.labeling.label_answers import read_answers

pytestmark = pytest.mark.labelstudio

#: The environment variable naming the label-studio executable.
EXECUTABLE = "ROBUSTAL_LABEL_STUDIO"
#: Seconds to wait for /health: a first start migrates the database (25-65 s measured).
STARTUP_TIMEOUT = 300
CLASSES = [str(c) for c in range(10)]


class LabelStudio:
    """A running Label Studio: its URL and a legacy API token (``Authorization: Token ...``)."""

    def __init__(self, url: str, token: str, startup_seconds: float):
        self.url, self.token, self.startup_seconds = url, token, startup_seconds

    def request(self, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, bytes]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None):
        status, content = self.request(method, path, body, raw)
        assert 200 <= status < 300, f"{method} {path}: HTTP {status}: {content[:500]!r}"
        return json.loads(content)

    def export(self, project: int, fmt: str, path: Path) -> Path:
        status, content = self.request("GET", f"/api/projects/{project}/export?exportType={fmt}")
        assert status == 200, f"export {fmt}: HTTP {status}: {content[:300]!r}"
        path.write_bytes(content)
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    exe = os.environ.get(EXECUTABLE)
    if not exe:
        pytest.skip(f"{EXECUTABLE} is not set: give the path of a label-studio executable (scripts/labelstudio-test "
                    "installs label-studio 1.23.2 into its own venv and sets it)")
    if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
        pytest.skip(f"{EXECUTABLE}={exe} is not an executable file")
    data = tmp_path_factory.mktemp("label-studio")
    port, token = _free_port(), secrets.token_hex(20)
    env = {**os.environ,
           "LABEL_STUDIO_BASE_DATA_DIR": str(data),
           # serve local files (the images robustal's tasks point to) under a Local Files storage
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "/",
           # 1.23 refuses a fixed ("legacy") API token unless this is set when the organisation is created
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LABEL_STUDIO_USER_TOKEN": token,
           "LABEL_STUDIO_USERNAME": "robustal@example.com", "LABEL_STUDIO_PASSWORD": secrets.token_hex(12),
           "LATEST_VERSION_CHECK": "false"}
    log_path = data / "label-studio.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen([exe, "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            while True:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(url + "/health", timeout=5) as r:
                        if r.status == 200:
                            break
                if proc.poll() is not None or time.perf_counter() - start > STARTUP_TIMEOUT:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    pytest.fail(f"Label Studio did not answer /health within {STARTUP_TIMEOUT} s (exit code "
                                f"{proc.poll()}):\n{tail}")
                time.sleep(1)
            yield LabelStudio(url, token, time.perf_counter() - start)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def label_args(pool: Path, out: Path, *extra: str) -> list[str]:
    """Standard training with a floor on the steps, so that the models learn: a model at chance level would send no
    predictions (issue 27.5), and the test checks that they show."""
    return ["label", "--pool", str(pool), "--classes", ",".join(CLASSES), "--image-size", "16", "--channels", "1",
            "--epsilon", "0.3", "--heldout-size", "40", "--initial", "20", "--per-stage", "20", "--budget", "60",
            "--epochs", "2", "--eval-steps", "2", "--attack-steps", "2", "--min-steps", "60", "--training",
            "standard", "--no-progress", "--out", str(out), *extra]


def waiting_for(text: str) -> Path | None:
    line = next((ln for ln in text.splitlines() if ln.startswith("waiting for")), None)
    return None if line is None else Path(line.split(" in ", 1)[1].split(" ")[0].rstrip(":"))


def choice(label: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def test_one_project_across_three_rounds(label_studio, mnist_folder, tmp_path, capsys):
    ls, (pool, truth) = label_studio, mnist_folder
    out = tmp_path / "project"
    assert main(label_args(pool, out)) == 0
    request = waiting_for(capsys.readouterr().out)
    assert request is not None and request.name == "heldout.csv"

    # The project, with robustal's labeling config.
    config = (out / "requests" / "label-studio-config.xml").read_text()
    # docs/guides/labeling.md's JSON body: predictions shown, skip button on (form fields would turn both off)
    project = ls.call("POST", "/api/projects", {"title": "robustal digits", "show_collab_predictions": True,
                                                "show_skip_button": True, "label_config": config})
    assert project["show_collab_predictions"] and project["show_skip_button"]
    pid = project["id"]
    assert project["parsed_label_config"]["label"]["labels"] == CLASSES
    # The images are served only under a Local Files storage of the project (the README's storage step).
    image = json.loads((out / "requests" / "heldout-label-studio.json").read_text())[0]["data"]["image"]
    assert ls.request("GET", image)[0] == 404
    ls.call("POST", "/api/storages/localfiles", {"project": pid, "path": str(pool.resolve()), "title": "pool",
                                                 "use_blob_urls": True})
    status, content = ls.request("GET", image)
    assert status == 200 and content[:4] == b"\x89PNG"

    formats = itertools.cycle([("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")])
    imported: dict[str, tuple[int, str]] = {}  # what robustal has imported: the person gave the true labels
    rounds, confirmed = [], 0
    while request is not None:
        name = request.stem
        task_file = request.with_name(f"{name}-label-studio.json")
        n = len(json.loads(task_file.read_text()))
        predicted = name not in ("heldout", "stage-000")  # a model exists from stage 1 on
        result = ls.call("POST", f"/api/projects/{pid}/import", raw=task_file.read_bytes())
        assert result["task_count"] == n and result["prediction_count"] == (n if predicted else 0)
        tasks = [t for t in ls.call("GET", f"/api/tasks?project={pid}&page_size=1000")["tasks"]
                 if t["data"]["robustal_request"] == name]
        assert len(tasks) == n
        if predicted:  # the labeling stream shows the model's prediction as a pre-annotation
            shown = ls.call("GET", f"/api/projects/{pid}/next")
            assert shown["data"]["robustal_request"] == name
            (p,) = shown["predictions"]
            assert p["model_version"] == "robustal" and 0.1 <= p["score"] <= 1
        for t in tasks:  # the person: confirms a right prediction, else chooses the class
            answer = str(truth[t["data"]["robustal_id"]])
            predictions = ls.call("GET", f"/api/tasks/{t['id']}")["predictions"]
            assert len(predictions) == (1 if predicted else 0)
            if predictions and predictions[0]["result"][0]["value"]["choices"] == [answer]:
                annotation = predictions[0]["result"]
                confirmed += 1
            else:
                annotation = choice(answer)
            ls.call("POST", f"/api/tasks/{t['id']}/annotations", {"result": annotation})
        ids = [t["data"]["robustal_id"] for t in tasks]
        exports = {fmt: ls.export(pid, fmt, tmp_path / f"{name}-{fmt}{ext}") for fmt, ext in
                   [("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")]}
        for fmt, path in exports.items():  # every format holds every round so far and reads the same
            assert read_answers(path, ids, CLASSES, known=imported, request=name) == {i: truth[i] for i in ids}, fmt
        fmt, _ = next(formats)
        assert main(label_args(pool, out, "--answers", str(exports[fmt]))) == 0, capsys.readouterr().err
        imported.update((i, (truth[i], name)) for i in ids)
        rounds.append((name, fmt))
        request = waiting_for(capsys.readouterr().out)
    assert rounds == [("heldout", "JSON"), ("stage-000", "JSON_MIN"), ("stage-001", "CSV"), ("stage-002", "JSON")]
    from robustal.storage.store import Store

    store = Store(out)
    assert store.status("label") == "finished" and [s.labeled for s in store.stages("label")] == [20, 40, 60]
    with capsys.disabled():  # for the record (pytest -s): how long Label Studio took, how useful the predictions were
        print(f"\nLabel Studio answered /health after {ls.startup_seconds:.0f} s; the person confirmed {confirmed} of "
              "40 predictions")

    # Every final export, given once more, agrees with everything imported.
    final = {fmt: ls.export(pid, fmt, tmp_path / f"final-{fmt}{ext}")
             for fmt, ext in [("JSON", ".json"), ("JSON_MIN", ".json"), ("CSV", ".csv")]}
    for path in final.values():
        assert main(label_args(pool, out, "--answers", str(path))) == 0
        assert "its answers agree with the labels imported" in capsys.readouterr().err
    # A label changed in Label Studio after its import is listed, with the file and the id.
    task = next(t for t in ls.call("GET", f"/api/tasks?project={pid}&page_size=1000")["tasks"]
                if t["data"]["robustal_request"] == "stage-000")
    sample_id = task["data"]["robustal_id"]
    wrong = str((truth[sample_id] + 1) % 10)
    (annotation,) = ls.call("GET", f"/api/tasks/{task['id']}/annotations")
    ls.call("PATCH", f"/api/annotations/{annotation['id']}", {"result": choice(wrong)})
    changed = ls.export(pid, "JSON", tmp_path / "changed.json")
    assert main(label_args(pool, out, "--answers", str(changed))) == 2
    err = capsys.readouterr().err
    assert str(changed) in err and f"(id {sample_id!r}): {wrong!r} here, but '{truth[sample_id]}' was imported " \
        "from stage-000" in err
