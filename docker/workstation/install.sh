#!/bin/sh
# Install edgekd with its pinned stack into a virtual environment, the way `make install` does
# (pip install -c constraints.txt -e '.[test,executorch]'), then check that the command works.
#   install.sh PROJECT_DIR VENV
set -eu
project=${1:?usage: install.sh PROJECT_DIR VENV}
venv=${2:?usage: install.sh PROJECT_DIR VENV}
python=${PYTHON:-python3}

make -C "$project" install VENV="$venv" PYTHON="$python"
"$venv/bin/edgekd" --version
