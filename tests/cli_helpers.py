"""What CLI tests share: a command that must fail with one clear line."""
from __future__ import annotations

from engine.cli.main import main


def cli_fails(capsys, argv: list, *fragments: str) -> str:
    """The command exits 2 with one error line holding every fragment."""
    code = main([str(a) for a in argv] + ["--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err
