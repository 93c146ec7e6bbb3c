"""``robustal label`` (a person labels what the loop asks for, round by round), ``robustal labels`` (the labels
given, out as CSV) and ``robustal status``."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustal.cli.common import (
    IMAGE_SIZE,
    POSITIVE_INT,
    add_eval_args,
    add_loop_args,
    add_model_args,
    add_runtime_args,
    add_tracking_args,
    add_training_args,
    check_attack_steps,
    log,
    loop_config,
    output_folder,
    progress_bar,
    tracker_from,
    train_config,
)


def _classes(args: argparse.Namespace) -> list[str]:
    from robustal.data.folders import scan_image_folder
    from robustal.errors import ConfigError

    if args.classes is not None:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.heldout is not None and Path(args.heldout).is_dir():
        return sorted(scan_image_folder(args.heldout)[1])
    raise ConfigError("Name the classes with --classes (e.g. --classes cat,dog,bird); labels in the answers are "
                      "these names (or their indices). With a labeled --heldout folder its sub-folders name them.")


def cmd_label(args: argparse.Namespace) -> int:
    from robustal.engine.autoattack import require
    from robustal.errors import ConfigError
    from robustal.labeling.labeling import (
        ProjectSettings,
        check_answers,
        heldout_split,
        load_pool,
        open_project,
        pool_fingerprint,
        project_splits,
    )
    from robustal.storage.outputs import check_output_file

    check_attack_steps(args)
    require(args.attack)  # a missing extra: before any work
    if args.answers is not None and not Path(args.answers).is_file():
        raise ConfigError(f"--answers {args.answers!r} not found; give the filled CSV or a Label Studio export "
                          "(JSON, JSON-MIN or CSV).")
    check_output_file(args.save, "--save")
    with output_folder(args.out):
        pool = load_pool(args.pool, args.image_size, args.channels)
        channels, size = int(pool.x.shape[1]), int(pool.x.shape[-1])
        epsilon = args.epsilon
        if epsilon is None:
            if Path(args.pool).is_dir():
                raise ConfigError("Give the L-inf budget with --epsilon for an image folder (e.g. 0.3 for grey "
                                  "digits, 8/255 = 0.0314 for colour photos).")
            epsilon = 0.3 if channels == 1 else 8 / 255
        settings = ProjectSettings(pool=str(Path(args.pool).resolve()), classes=_classes(args), image_size=size,
                                   channels=channels, epsilon=epsilon,
                                   heldout=str(Path(args.heldout).resolve()) if args.heldout else None,
                                   heldout_size=args.heldout_size, seed=args.seed,
                                   pool_fingerprint=pool_fingerprint(pool))
        project = open_project(args.out, settings, pool)
        if args.answers is not None and project.is_new:
            raise ConfigError(f"--answers {args.answers}: {args.out} is a new project, which has asked for nothing "
                              "yet. Run the command without --answers: it writes the first request.")
        heldout = heldout_split(project)
        setup = _loop_setup(args, project, len(pool.ids) - (0 if heldout is not None else settings.heldout_size))
        _check_redo(args, project)
        project.record()  # every check has passed: from here on, files are written
        answers = Path(args.answers) if args.answers is not None else None
        state = project_splits(project, answers, heldout)
        if state.heldout_request is not None:
            print(f"waiting for {state.heldout_n} labels in {state.heldout_request}: the held-out sample for "
                  "validation and test (fill in its label column, or import heldout-label-studio.json into "
                  "Label Studio and give its export with --answers), then run this command again.")
            return 0
        note = check_answers(project, state)
        if note:
            log(note)
        return _label_rounds(args, project, state, *setup)


def _check_redo(args: argparse.Namespace, project) -> None:
    """``--redo-stage N``: N must be the project's last finished stage (checked before anything is written)."""
    from robustal.errors import ConfigError
    from robustal.labeling.labeling import RUN_NAME
    from robustal.storage.store import Store

    if args.redo_stage is None:
        return
    stages = Store(project.out, create=False).stages(RUN_NAME) if (project.out / "results.db").is_file() else []
    if not stages:
        raise ConfigError(f"--redo-stage {args.redo_stage}: {project.out} has no finished stage yet, so there is "
                          "nothing to redo. Run the command without --redo-stage.")
    if args.redo_stage != stages[-1].stage:
        raise ConfigError(f"--redo-stage {args.redo_stage}: only the last finished stage, {stages[-1].stage}, can be "
                          "trained again (the models of earlier stages are not kept, and the stages after them "
                          f"continued from them). Give --redo-stage {stages[-1].stage}.")


def _loop_setup(args: argparse.Namespace, project, pool_size: int):
    """The loop's configuration and model factory, checked before anything is written."""
    from dataclasses import replace

    from robustal.engine.attacks import AttackConfig
    from robustal.engine.evaluation import eval_step_size
    from robustal.loop.experiment import model_factory
    from robustal.models import default_model_for_images

    s = project.settings
    train = replace(train_config(args), epsilon=s.epsilon, augment=())
    eval_attack = (AttackConfig(args.attack, s.epsilon, eval_step_size(s.epsilon, s.step_size, args.eval_steps),
                                args.eval_steps) if args.eval_steps else None)
    cfg = loop_config(args, train=train, eval_attack=eval_attack)
    cfg.check_pool(pool_size)
    model_name = args.model or default_model_for_images(s.channels, s.image_size)
    factory = model_factory(model_name, num_classes=len(s.classes), in_channels=s.channels, image_size=s.image_size)
    factory()  # fail early on a model that cannot take these images
    return cfg, model_name, factory


def _label_rounds(args: argparse.Namespace, project, state, cfg, model_name: str, factory) -> int:
    from robustal.errors import CheckpointError, StoreError
    from robustal.labeling.labeling import RUN_NAME
    from robustal.loop import ActiveLearningLoop
    from robustal.reports.tables import format_table
    from robustal.storage.store import Store

    s = project.settings
    store = Store(project.out)
    bar = progress_bar(len(cfg.stage_sizes()), "stages", disable=args.no_progress)
    # each stage checkpoint records what --save records: evaluate measures it on the project's held-out labels
    describe = {"model_name": model_name, "dataset": str(project.out.resolve()), "num_classes": len(s.classes),
                "image_shape": [s.channels, s.image_size, s.image_size], "epsilon": s.epsilon,
                "classes": list(s.classes), "data_fingerprint": s.pool_fingerprint, "train_config": cfg.train.to_dict()}
    loop = ActiveLearningLoop(None, state.splits, cfg, store=store, name=RUN_NAME, device=args.device,
                              reinit=factory, progress=not args.no_progress, on_stage=lambda r: bar.update(1),
                              meta={"model_name": model_name}, oracle=state.oracle, tracker=tracker_from(args),
                              describe=describe)
    _check_run_options(project, store, loop)
    if args.redo_stage is not None:
        log(f"stage {loop.redo_last_stage()} is trained again from new weights on the same labels")
    state.oracle.predict = _predictions(loop, state.splits.pool.x)
    try:
        result = loop.run()
    except CheckpointError as e:
        raise StoreError(f"{project.out}: the model of stage {e.stage} ({e.path}) {e.problem}. Your labels are safe: "
                         "results.db and requests/ keep every one of them, so keep those files as they are. Restore "
                         f"that file from a backup, or run this command again with --redo-stage {e.stage}: it trains "
                         f"stage {e.stage} again from new weights on the same labels, and asks for nothing "
                         "again.") from None
    finally:
        bar.close()
    if result.stages:
        print(format_table(["stage", "labeled", "clean", "robust", "at chance"],
                           [[r.stage, r.labeled, r.clean, r.robust, "yes" if r.at_chance else ""]
                            for r in result.stages], floatfmt=".4f"))
    if args.save is not None and result.stages:
        from robustal.loop.checkpoint import save_checkpoint

        save_checkpoint(args.save, result.model, model_name, num_classes=len(s.classes),
                        image_shape=(s.channels, s.image_size, s.image_size), epsilon=s.epsilon,
                        dataset_name=str(project.out.resolve()), data_fingerprint=s.pool_fingerprint,
                        train_config=cfg.train, selected=result.labeled.tolist(), classes=s.classes)
        log(f"saved the model of stage {result.stages[-1].stage} to {args.save}")
    if result.waiting is not None:
        w = result.waiting
        print(f"waiting for {w.n} labels in {w.where}; then run this command again.")
    else:
        log(f"finished: {result.stages[-1].labeled} labels; the model of the last stage is in "
            f"{project.out / 'checkpoints'}")
    return 0


def _predictions(loop, pool_x):
    """The class probabilities a request after the first carries as Label Studio pre-annotations: those of the model
    that picked it; none from a model at chance level, whose pre-ticked class would be a guess (a 6 shown as "4" at
    21 %) that a person confirms too easily."""
    from robustal.acquisition.inference import predict

    def probs(indices):
        if loop.at_chance:
            log("the model is at chance level: this request carries no predictions (Label Studio pre-annotations)")
            return None
        return predict(loop.model, pool_x[indices], device=loop.device).probs

    return probs


def _check_run_options(project, store, loop) -> None:
    """Refuse, in the words of ``label``, to continue the project's run under other loop options (the store's own
    refusal suggests --name, which ``label`` does not have: a project has one run)."""
    import json

    from robustal.errors import StoreError
    from robustal.labeling.labeling import RUN_NAME
    from robustal.storage.schema import config_diff

    stored = store.run_config(RUN_NAME)
    if stored is None:
        return
    diff = config_diff(stored, json.loads(json.dumps(loop._store_config(), sort_keys=True)))
    if diff:
        raise StoreError(f"{project.out} is a labeling project whose rounds ran with other options "
                         f"({'; '.join(diff)}). Continue it with the options it was started with (the labels given "
                         "so far are kept), or start a new project in another --out.")


def cmd_status(args: argparse.Namespace) -> int:
    from robustal.errors import StoreError
    from robustal.labeling.labeling import PROJECT_FILE, read_project_file
    from robustal.storage.outputs import lock_holder
    from robustal.storage.store import Store

    folder = Path(args.dir)
    project = folder / PROJECT_FILE
    has_results = (folder / "results.db").is_file()
    is_project = project.is_file()
    if is_project:
        try:
            p = read_project_file(project)
        except StoreError as e:
            if not has_results:
                raise
            log(f"robustal status: note: {e}")
            is_project = False
        else:
            heldout = p.get("heldout") or f"{p.get('heldout_size')} pool images labeled first"
            print(f"labeling project {folder}: pool {p['pool']}; classes {', '.join(map(str, p['classes']))}; "
                  f"held-out {heldout}")
            if not has_results:
                csv = folder / "requests" / "heldout.csv"
                print(f"waiting for {p.get('heldout_size')} labels in {csv} (the held-out sample).")
                return 0
    store = Store(folder, create=False)
    holder = lock_holder(folder)
    runs = store.runs()
    for run in runs:
        run["status"] = _live_status(run["status"], holder, run.get("updated"))
    if len(runs) > 3:  # a study: one line per run
        _study_status(store, runs)
    else:
        for run in runs:
            _run_status(store, run, folder, is_project, holder)
    _provenance_status(store, runs)
    if holder is not None:
        print(f"\n{_holder_line(holder)}")
    return 0


def _holder(holder: str) -> tuple[str, str, str] | None:
    """``(pid, command, since)`` of what the folder's lock holder wrote (None: not robustal's words)."""
    import re

    m = re.fullmatch(r"pid (\d+), (.*), since (.+)", holder.strip(), re.S)
    return (m[1], m[2], m[3]) if m else None


def _holder_line(holder: str) -> str:
    """``running now: pid P, since T (COMMAND)``."""
    parts = _holder(holder)
    return f"running now: pid {parts[0]}, since {parts[2]} ({parts[1]})" if parts else f"running now: {holder}"


def cmd_labels(args: argparse.Namespace) -> int:
    from robustal.labeling.label_export import project_labels, write_labels
    from robustal.storage.outputs import check_output_file

    check_output_file(args.out, "--out", "labels.csv")
    rows = project_labels(args.dir)
    write_labels(rows, args.out)
    rounds = len({r["round"] for r in rows})
    log(f"wrote {args.out}: {len(rows)} label{'' if len(rows) == 1 else 's'} from {rounds} "
        f"round{'' if rounds == 1 else 's'} of {args.dir}")
    return 0


def _live_status(status: str, holder: str | None, updated: float | None = None) -> str:
    """A run recorded as running is running now while a process holds its folder; with no holder, it was stopped
    without finishing (killed). So was one last written before the holder started: a process marks each run it
    takes up as running, so that run is one a killed process left."""
    if status == "running" and holder is None:
        return "interrupted (its process ended without finishing; run the same command again to resume)"
    if status == "running":
        parts = _holder(holder)
        if parts and updated is not None and updated < _since(parts[2]):
            return ("interrupted (its process ended without finishing, before the command now holding the folder "
                    "started; that command resumes it if it includes it)")
        return f"running now (pid {parts[0]}, since {parts[2]})" if parts else "running now"
    return status


def _since(text: str) -> float:
    """The holder's start (local time, whole seconds) as a timestamp; -inf when it cannot be read."""
    import time

    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return float("-inf")


def _stopping_advice(run: dict, stages: list) -> str:
    """What the run's stopping rule (robustal's default rule if it has none) says about its stages so far."""
    from robustal.loop.stopping import StoppingRule

    stored = run["config"].get("loop", {}).get("stop")
    rule = StoppingRule(**stored) if stored else StoppingRule()
    scores = [s.val_score for s in stages]
    stop = rule.stop_stage(scores)
    if stop is not None:
        return (f"stopping rule ({rule.describe()}): enough at stage {stop} ({stages[stop].labeled} labels); "
                "more labels have not paid since")
    gain = rule.gain(scores, len(scores) - 1)
    if gain is None:
        return f"stopping rule ({rule.describe()}): too early to say ({len(stages)} stage(s))"
    return (f"stopping rule ({rule.describe()}): keep labeling; validation gained {100 * gain:.1f} points over the "
            f"last {rule.patience} stage(s)")


#: Status columns of a run that trains on its unlabeled pool: pool images used, pseudo-label and teacher accuracy.
POOL_HEADERS = ["pool images", "pseudo-label acc", "teacher clean"]


def _pool_cells(stage) -> list:
    """A stage's :data:`POOL_HEADERS` cells (pseudo-labels are measured only where the true labels are known)."""
    return [stage.pool_images, stage.pseudo_accuracy, stage.teacher_clean]


def _study_status(store, runs: list[dict]) -> None:
    from robustal.reports.tables import format_table

    rows, pool = [], False
    for run in runs:
        stages = store.stages(run["name"])
        last = stages[-1] if stages else None
        pool = pool or any(s.pool_images is not None for s in stages)
        rows.append([run["name"], run["status"].split(" (")[0], len(stages), last.labeled if last else 0,
                     last.clean if last else None, last.robust if last else None, sum(s.at_chance for s in stages),
                     *(_pool_cells(last) if last else [None] * 3)])
    rows = [r if pool else r[:-3] for r in rows]
    print(format_table(["run", "status", "stages", "labels", "clean", "robust", "stages at chance"]
                       + POOL_HEADERS * pool, rows, floatfmt=".4f"))


def _provenance_status(store, runs: list[dict]) -> None:
    """Where the runs were computed (one line per machine, saying so when there are several), their versions, and
    the final attacks stored."""
    from robustal.loop.final_eval import row_line
    from robustal.storage.provenance import machine_label, machine_lines, version_label

    if not runs:
        return
    print("\n" + "\n".join(ln.replace("**", "") for ln in machine_lines((r["name"], r["versions"]) for r in runs)
                           if ln))
    print("versions: " + " / ".join(dict.fromkeys(version_label(r["versions"]) or "not recorded" for r in runs)))
    rows = store.final_attacks()
    if rows:
        machines = {r["run"] + r["attack"]: machine_label(r["provenance"]) for r in rows}
        one = len(set(machines.values())) == 1
        print(f"final attacks: {len(rows)} stored (robustal report shows them)"
              + (f", attacked on {next(iter(machines.values()))}" if one else ""))
        for row in rows[:5] if len(runs) > 3 else rows:
            print(f"  {row_line(row)}" + ("" if one else f" on {machines[row['run'] + row['attack']]}"))


def _imported_stage(stage: int, n: int, status: str, holder: str | None) -> str:
    """A stage whose labels are in: being trained now by the process that holds the folder, or waiting for the
    command to run again (nobody holds it, or the run stopped to wait)."""
    if status.startswith("running") and holder is not None:  # _live_status's "running now (pid P, since T)"
        parts = _holder(holder)
        who = f"pid {parts[0]}, since {parts[2]}" if parts else holder
        return f"stage {stage}: its {n} labels are imported; training now ({who})"
    return f"stage {stage}: its {n} labels are imported; it waits for the command to run again"


def _run_status(store, run: dict, folder: Path, is_project: bool, holder: str | None = None) -> None:
    from robustal.reports.tables import count, format_table

    name = run["name"]
    stages = store.stages(name)
    labeled = store.labels(name)
    labels = len(labeled) or (stages[-1].labeled if stages else 0)
    print(f"\nrun {name!r}: {run['status']}, {count(len(stages), 'stage')}, {count(labels, 'label')} so far")
    if stages:
        pool = any(s.pool_images is not None for s in stages)
        print(format_table(["stage", "labeled", "clean", "robust", "val score", "at chance"] + POOL_HEADERS * pool,
                           [[s.stage, s.labeled, s.clean, s.robust, s.val_score, "yes" if s.at_chance else ""]
                            + _pool_cells(s) * pool for s in stages], floatfmt=".4f"))
        print(_stopping_advice(run, stages))
    for stage in store.pending_stages(name):
        picks = store.pending(name, stage)
        picked = picks[0].tolist() if picks is not None else []
        awaited = sum(i not in labeled for i in picked)
        if awaited:
            where = folder / "requests" / f"stage-{stage:03d}.csv" if is_project else "the oracle"
            print(f"awaited: {awaited} labels for stage {stage} in {where}")
        else:
            print(_imported_stage(stage, len(picked), run["status"], holder))


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("label", help="label your own images round by round: robustal asks, you answer, it trains",
                       description="A labeling project: each round robustal picks the images to label and writes a "
                                   "request (a CSV to fill in, a contact sheet, a Label Studio task file with the "
                                   "model's predictions) into OUT/requests/, and stops. Fill in the CSV (or give "
                                   "your Label Studio project's export with --answers) and run the same command "
                                   "again: the labels are checked, the model trains and is evaluated, and the next "
                                   "request is written.")
    g = p.add_argument_group("data")
    g.add_argument("--pool", required=True, metavar="DIR|FILE.npz",
                   help="the unlabeled images: a folder of PNG/JPEG files, or an .npz with x_train")
    g.add_argument("--classes", default=None, metavar="A,B,...", help="the class names, comma-separated")
    g.add_argument("--heldout", default=None, metavar="DIR|FILE.npz",
                   help="labeled images for validation and test: a folder with one sub-folder per class, or an "
                        ".npz with x_test and y_test (default: ask for --heldout-size pool images first)")
    g.add_argument("--heldout-size", type=POSITIVE_INT, default=200,
                   help="pool images to label first for validation and test when --heldout is not given "
                        "(default: %(default)s)")
    g.add_argument("--image-size", type=IMAGE_SIZE, default=None,
                   help="side (pixels) that images of a folder are resized to")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="1 (grey) or 3 (colour), for images of a folder")
    g.add_argument("--answers", default=None, metavar="FILE",
                   help="the answers to the request now awaited: a filled CSV, or an export of your Label Studio "
                        "project (JSON, JSON-MIN or CSV; it may hold earlier rounds' tasks too) (default: the "
                        "request's own CSV, filled in place)")
    add_model_args(p)
    add_loop_args(p)
    add_training_args(p)
    add_eval_args(p)
    add_runtime_args(p)
    add_tracking_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the project folder")
    p.add_argument("--redo-stage", type=int, default=None, metavar="N",
                   help="train the last finished stage N again, from new weights on the same labels (nothing is "
                        "asked again): the way on when its model checkpoint is lost or damaged")
    p.add_argument("--save", default=None, metavar="FILE.pt",
                   help="save the latest model (robustal evaluate --model FILE.pt measures it on the project's "
                        "held-out labels)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("status", help="where a run, study or labeling project stands",
                       description="For each run in a results folder: its status, stages with clean and robust "
                                   "accuracy, labels so far, and what is awaited (labeling projects: which request "
                                   "file to fill in).")
    p.add_argument("dir", metavar="DIR", help="a results folder (run, study or labeling project)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("labels", help="write the labels a person gave in a labeling project as CSV",
                       description="Write every label given in the labeling project DIR (the --out of robustal "
                                   "label) as CSV, one row per labeled image: file (its path in the pool folder, or "
                                   "its index in the pool's npz), class, round (the stage whose request asked for "
                                   "it, or heldout), split (train; validation or test for the held-out sample) and "
                                   "source (csv: a filled request CSV; label-studio: a Label Studio export given "
                                   "with --answers). Only labels a person gave; never a model's predictions.")
    p.add_argument("dir", metavar="DIR", help="a labeling project's folder")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="the CSV to write (atomically)")
    p.set_defaults(func=cmd_labels)

