# shellcheck shell=bash
# Shared by scripts/test and scripts/demo (source it, don't run it): make sure the repo's
# .venv exists and holds an editable install of ripp with the test extras, then put it first
# on PATH. Reinstalling is skipped while pyproject.toml is unchanged since the last install,
# so repeated runs start in about a second.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.ripp-install-stamp"
# Let a developer pick another interpreter (e.g. RIPP_PYTHON=python3.12); default python3.
PYTHON="${RIPP_PYTHON:-python3}"

ripp_ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "scripts: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
        "$PYTHON" -m venv "$VENV"
    fi

    local want have=""
    want="$(cd "$REPO_ROOT" && "$VENV/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
    [ -f "$STAMP" ] && have="$(cat "$STAMP")"
    if [ "$want" != "$have" ]; then
        echo "scripts: installing ripp and its test dependencies into .venv (first run takes a while)" >&2
        # -qq: only errors. Plain --quiet still prints one warning per package for every
        # configured index that lacks it, which buries the test output.
        (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install -qq -e ".[test]")
        # Written only after a successful install, so a failed one is retried next time.
        echo "$want" >"$STAMP"
    fi

    export PATH="$VENV/bin:$PATH"
    export VIRTUAL_ENV="$VENV"
}
