"""One flag convention for every verb, `--config run.yaml`, and one-line refusals of old flag names."""

import contextlib
import io
import os
import re

import pytest

from roma_eval import cli
from roma_eval.methods.roma import RomaConfig


def run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("verb, old, new", [
    (["train", "--tasks", "t", "--output_path", "o"], "--model", "--pretrained"),
    (["oracle", "--pretrained", "m", "--tasks", "t"], "--out", "--output_path"),
    (["report"], "--out", "--output_path"),
    (["demo"], "--quiet", "--no_progress"),
])
def test_old_flag_names_are_refused_with_the_new_one(tmp_path, verb, old, new):
    argv = [*verb, old] + ([] if old == "--quiet" else [str(tmp_path / "x")])
    code, err = run(argv)
    assert code == 2 and len(err) == 1 and f"{old} is now {new}" in err[0]
    assert not (tmp_path / "x").exists()


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    (tmp_path / "run.yaml").write_text("lam: 0.5\nwarmup-ratio: 0.2\nepochs: 7\n")
    parser, verb_parser = cli.build_parser("train")
    argv = ["train", "--pretrained", "m", "--tasks", "t", "--output_path", "o", "--config", str(tmp_path / "run.yaml"),
            "--epochs", "2"]
    cli._apply_config_file(verb_parser, str(tmp_path / "run.yaml"))
    args = parser.parse_args(argv)
    config = RomaConfig(**{name: getattr(args, name) for name in RomaConfig.__dataclass_fields__})
    assert (config.lam, config.warmup_ratio, config.epochs) == (0.5, 0.2, 2)


def test_unknown_config_keys_and_bad_choices_are_one_line(tmp_path):
    (tmp_path / "run.yaml").write_text("lamda: 0.5\n")
    code, err = run(["train", "--pretrained", "m", "--tasks", "t", "--output_path", str(tmp_path / "o"),
                     "--config", str(tmp_path / "run.yaml")])
    assert code == 2 and len(err) == 1 and "unknown option(s) lamda" in err[0]
    with pytest.raises(SystemExit):  # argparse's own refusal of a choice outside the Literal
        with contextlib.redirect_stderr(io.StringIO()):
            cli.main(["train", "--pretrained", "m", "--tasks", "t", "--output_path", "o", "--regulariser", "l3"])


def test_dashed_and_underscored_spellings_are_the_same_flag():
    parser, _ = cli.build_parser("check")
    a = parser.parse_args(["check", "--baseline", "a", "--candidate", "b", "--max-drop", "2"])
    b = parser.parse_args(["check", "--baseline", "a", "--candidate", "b", "--max_drop", "2"])
    assert a.max_drop == b.max_drop == 2.0


def test_the_top_level_help_lists_every_verb_once_by_group(capsys):
    """`roma-eval --help`: every verb once, under a group with one example, and no flat list beside it."""
    from roma_eval.cli import VERB_GROUPS, VERBS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    grouped = [verb for _, verbs, _ in VERB_GROUPS for verb in verbs]
    assert sorted(grouped) == sorted(VERBS)
    for verb in VERBS:
        assert len(re.findall(rf"^  {re.escape(verb)} +\S", out, flags=re.M)) == 1, verb
    assert out.count("  e.g. roma-eval ") == len(VERB_GROUPS)


def test_every_verb_sleeps_idle_openmp_threads(monkeypatch):
    """The CLI sets OMP_WAIT_POLICY=PASSIVE before a verb imports torch, and keeps a value the user set."""
    from roma_eval.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main(["check", "--baseline", "nowhere", "--candidate", "nowhere"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main(["check", "--baseline", "nowhere", "--candidate", "nowhere"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
