"""The command line of the herd: what follows ``test`` is pytest's, as the README shows."""

import pytest

from deploy.herd import cli


@pytest.mark.parametrize(
    "argv",
    [
        ["-k", "router"],  # make test PYTEST_ARGS="-k router"
        ["-q", "-x", "scaling"],
        ["scaling", "-k", "router", "-p", "no:cacheprovider"],
        [],
    ],
)
def test_everything_after_test_reaches_pytest_in_order(monkeypatch, argv):
    passed = []
    monkeypatch.setattr(cli, "run_tests", lambda args: passed.append(args) or 0)
    assert cli.main(["test", *argv]) == 0
    assert passed == [argv]


def test_an_option_no_other_command_knows_is_refused(monkeypatch):
    monkeypatch.setattr(cli, "Herd", lambda *args, **kwargs: pytest.fail("the herd was touched"))
    with pytest.raises(SystemExit) as refused:
        cli.main(["status", "-k", "router"])
    assert refused.value.code == 2
