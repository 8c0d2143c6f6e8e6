"""How the CLI ends: user errors in one line with exit 2, missing resources with exit 3, bugs with a traceback."""
import pytest
from ray.exceptions import RayTaskError

from synthpref import cli
from synthpref.errors import NoUsableRows, ResourceError

ARGS = ["label", "--config", "x.yaml"]


def failing(exc):
    def command(*args):
        raise exc
    return command


def test_user_error_is_one_line_with_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_label", failing(NoUsableRows("data.path: no usable prompts in x\n(2 quarantined)")))
    assert cli.main(ARGS) == 2
    assert capsys.readouterr().err == "synthpref: error: data.path: no usable prompts in x (2 quarantined)\n"


def test_user_error_raised_inside_an_actor_shows_only_its_message(monkeypatch, capsys):
    remote = RayTaskError("setup", "Traceback (most recent call last):\n  ...", NoUsableRows("model: bad"))
    wrapped = remote.as_instanceof_cause()        # what ray.get raises for an actor's exception
    monkeypatch.setattr(cli, "cmd_label", failing(wrapped))
    assert cli.main(ARGS) == 2
    assert capsys.readouterr().err == "synthpref: error: model: bad\n"


def test_missing_resources_exit_3(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_label", failing(ResourceError("trainer group policy: 2 ranks could not be placed")))
    assert cli.main(ARGS) == 3
    assert "could not be placed" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "cmd_label", failing(KeyError("ours")))
    with pytest.raises(KeyError):
        cli.main(ARGS)
    monkeypatch.setattr(cli, "cmd_label", failing(FileNotFoundError("a file our code expected")))
    with pytest.raises(FileNotFoundError):         # only a missing *input* (MissingInput) is the user's
        cli.main(ARGS)


def test_an_output_dir_uri_of_an_unknown_filesystem_is_a_user_error(capsys):
    from tests.conftest import REPO
    assert cli.main(["label", "--config", str(REPO / "configs" / "ci-tiny.yaml"), "output_dir=nosuchfs://bucket/run"]) == 2
    assert capsys.readouterr().err.startswith("synthpref: error: output_dir: 'nosuchfs://bucket/run' names a filesystem")
