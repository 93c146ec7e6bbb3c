"""Play the person in Label Studio: annotate one robustal request's tasks of a project from a file of true labels
(id,label), through Label Studio's API -- confirming the model's prediction where it is right, choosing the class
where it is not. The counterpart of scripts/answer.py for a Label Studio project.

Usage: python scripts/label_studio_answer.py URL PROJECT_ID REQUEST TRUTH.csv
       (e.g. http://localhost:8080 1 stage-001 mnist-pngs-truth.csv; the API token in $LABEL_STUDIO_TOKEN)
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from _truth import read_truth

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("url", help="Label Studio's address, e.g. http://localhost:8080")
ap.add_argument("project", help="the project's id in Label Studio")
ap.add_argument("request", help="the robustal request whose tasks to annotate, e.g. stage-001")
ap.add_argument("truth", type=Path, metavar="TRUTH.csv", help="the true labels, id,label (scripts/mnist_pngs.py)")
args = ap.parse_args()
url, project, request = args.url.rstrip("/"), args.project, args.request
token = os.environ.get("LABEL_STUDIO_TOKEN")
if not token:
    sys.exit("label_studio_answer: $LABEL_STUDIO_TOKEN is not set; set it to the API token of Label Studio's "
             "Account & Settings page")


def call(method: str, path: str, body: object = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"label_studio_answer: {method} {url + path} answered {e.code} {e.reason}; check the project id "
                 "and $LABEL_STUDIO_TOKEN")
    except urllib.error.URLError as e:
        sys.exit(f"label_studio_answer: no Label Studio at {url} ({e.reason}); start it or give its address")


truth = read_truth(args.truth, "label_studio_answer")
tasks = [t for t in call("GET", f"/api/tasks?project={project}&page_size=100000")["tasks"]
         if t["data"].get("robustal_request") == request and not t["total_annotations"]]
unknown = [t["data"]["robustal_id"] for t in tasks if t["data"]["robustal_id"] not in truth]
if unknown:
    sys.exit(f"label_studio_answer: {len(unknown)} task(s) of {request} have no label in {args.truth} "
             f"(first: {unknown[0]!r}); give the truth file written beside the project's image folder")
confirmed = predicted = 0
for task in tasks:
    answer = truth[task["data"]["robustal_id"]]
    predictions = call("GET", f"/api/tasks/{task['id']}")["predictions"]
    predicted += bool(predictions)
    if predictions and predictions[0]["result"][0]["value"]["choices"] == [answer]:
        result = predictions[0]["result"]  # the pre-annotation is right: confirm it
        confirmed += 1
    else:
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [answer]}}]
    call("POST", f"/api/tasks/{task['id']}/annotations", {"result": result})
print(f"annotated {len(tasks)} tasks of {request}" +
      (f"; {confirmed} of {predicted} predictions confirmed, {predicted - confirmed} corrected" if predicted else ""))
