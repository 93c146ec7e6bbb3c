"""Play the person in Label Studio: annotate one robustal request's tasks of a project from a file of true labels
(id,label), through Label Studio's API -- confirming the model's prediction where it is right, choosing the class
where it is not. The counterpart of scripts/answer.py for a Label Studio project.

Usage: python scripts/label_studio_answer.py URL PROJECT_ID REQUEST TRUTH.csv
       (e.g. http://localhost:8080 1 stage-001 mnist-pngs-truth.csv; the API token in $LABEL_STUDIO_TOKEN)
"""

import csv
import json
import os
import sys
import urllib.request

url, project, request, truth_file = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
token = os.environ["LABEL_STUDIO_TOKEN"]


def call(method: str, path: str, body: object = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


with open(truth_file, newline="") as f:
    truth = {row["id"]: row["label"] for row in csv.DictReader(f)}
tasks = [t for t in call("GET", f"/api/tasks?project={project}&page_size=100000")["tasks"]
         if t["data"].get("robustal_request") == request and not t["total_annotations"]]
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
