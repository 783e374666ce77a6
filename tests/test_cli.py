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


def test_library_noise_is_off_unless_verbose(monkeypatch):
    """Quiet by default through the libraries' own switches (a user's own setting wins); -v, before or after the
    verb, leaves them alone; lm-eval's warnings about the model our verbs pass it on purpose are dropped."""
    import logging

    from roma_eval.cli import main
    from roma_eval.quiet import QUIET_ENVIRONMENT

    for name in QUIET_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for argv in (["-v", "check"], ["check", "--verbose"]):
        main([*argv, "--baseline", "nowhere", "--candidate", "nowhere"])
        assert not any(name in os.environ for name in QUIET_ENVIRONMENT), argv
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    main(["check", "--baseline", "nowhere", "--candidate", "nowhere"])
    expected = {**QUIET_ENVIRONMENT, "TRANSFORMERS_VERBOSITY": "info"}
    assert {name: os.environ[name] for name in QUIET_ENVIRONMENT} == expected

    lm_eval_hf = logging.getLogger("lm_eval.models.huggingface")
    passed = [lm_eval_hf.filter(logging.LogRecord("lm_eval.models.huggingface", logging.WARNING, "", 0, text, (), None))
              for text in ("Passed an already-initialized model through `pretrained`, assuming ...",
                           "Model parallel was set to False.")]
    assert not passed[0] and passed[1]


@pytest.mark.parametrize("verb", ["train", "oracle", "reproduce", "check", "dense-bp"])
def test_a_verbs_required_flags_come_first(verb, capsys):
    from roma_eval.cli import build_parser

    _, parser = build_parser(verb)
    required = [action.option_strings[0] for action in parser._actions if action.required and action.option_strings]
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0].split()
    assert usage[3:3 + 2 * len(required):2] == required  # "usage: roma-eval VERB --a A --b B ..."
    sections = re.findall(r"^(\S[^\n]*):$", out, flags=re.M)
    assert sections[0] == "required arguments" and out.count(required[0] + " ") >= 2
    # Still required after the move.
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "the following arguments are required" in capsys.readouterr().err


def test_repeated_runs_in_one_process_log_each_notice_once_to_the_current_stderr(capsys):
    """`main` called again (by a script, or a test) neither stacks handlers nor writes to a stream it saw before."""
    import contextlib
    import io
    import logging

    from roma_eval.cli import main

    for _ in range(3):
        with contextlib.redirect_stderr(io.StringIO()) as old:
            main(["toy", "path"])
    old.close()  # what a finished test's captured stream is
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        logging.getLogger("roma_eval.cli").warning("a notice")
    assert err.getvalue() == "a notice\n"
