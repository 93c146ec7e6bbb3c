"""robustal 0.4 changed two training defaults (15 epochs of >= 150 steps instead of 10 of >= 100, docs/recipe.md):
results stored under the old ones are refused, never resumed or mixed under the new ones, and the refusal says how
to resume them."""

from __future__ import annotations

from errors_conftest import assert_unchanged, call, snapshot

from study_files import TINY_LOOP, grid_toml, settings_toml, study_toml


def _study(folder, train: dict):
    path = folder / "tiny.toml"
    path.write_text(study_toml(grid_toml(("random",)), settings=settings_toml(TINY_LOOP, train)))
    return path


def test_a_study_stored_under_the_old_defaults_is_refused_under_the_new_ones_with_the_settings_that_resume_it(
        tmp_path, capsys):
    old = {"epochs": 10, "min_steps": 100, "batch_size": 32}
    out = tmp_path / "out"
    assert call(["study", _study(tmp_path, old), "--out", out, "--no-progress"], capsys).code == 0
    before = snapshot(out)

    new_defaults = tmp_path / "new"
    new_defaults.mkdir()
    r = call(["study", _study(new_defaults, {"batch_size": 32}), "--out", out, "--no-progress"], capsys)
    assert r.code != 0 and "Traceback" not in r.err
    for fragment in ("train.epochs: stored 10, now 15", "train.min_steps: stored 100, now 150",
                     "0.3's training defaults", "[train] epochs = 10, min_steps = 100"):
        assert fragment in r.err, f"the refusal should say {fragment!r}:\n{r.err}"
    assert_unchanged(before, snapshot(out), "a refused study: ")

    r = call(["study", _study(tmp_path, old), "--out", out, "--no-progress"], capsys)
    assert r.code == 0, r.err
    assert_unchanged(before, snapshot(out), "resuming a finished study with its own settings: ")
